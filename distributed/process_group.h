#pragma once
// A c10d process group (Gloo or NCCL) over a c10d store (TCPStore or FileStore), owned as one
// object. Every blocking call names the collective in its error, and the peer it waited for, so
// a dead or hung peer shows up as "allreduce of DDP bucket 2 failed on rank 0 (timeout 60 s):
// ...; waited for rank 1 (host node1, 10.0.0.6), ..." rather than as a hang.
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/csrc/distributed/c10d/Work.hpp>

#include "distributed/launch.h"

namespace ctrain::distributed {

class ProcessGroup {
 public:
  // Rendezvous at info.init_method and build the backend: `backend` "gloo" or "nccl" ("" picks
  // nccl when `device` is CUDA and this LibTorch has NCCL, else gloo). Every collective, and
  // the rendezvous itself, gives up after `timeout`.
  static std::unique_ptr<ProcessGroup> create(const LaunchInfo& info, std::string backend,
                                              torch::Device device,
                                              std::chrono::milliseconds timeout);
  ~ProcessGroup();

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& backend() const { return backend_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  // What carries the collectives, for the start-up line: "gloo over [tcp, ... iface=lo ...]",
  // or "nccl (TORCH_NCCL_BLOCKING_WAIT=1)".
  const std::string& transport() const { return transport_; }

  // Asynchronous sum-allreduce in place; finish with wait().
  c10::intrusive_ptr<c10d::Work> allreduce_async(torch::Tensor& t);
  // Waits for `work`, turning a failure or timeout into ctrain::Error naming `what`.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what);

  void allreduce_sum(torch::Tensor& t, const std::string& what);
  void broadcast(std::vector<torch::Tensor>& tensors, int root, const std::string& what);
  void barrier(const std::string& what);

 private:
  struct Impl;
  explicit ProcessGroup(std::unique_ptr<Impl> impl);
  // After a collective failed here with `message`: "; ..." naming the peer it waited for (one
  // whose connection closed, by Gloo's message; else those that did not report a failure of
  // their own on the store within a few seconds: dead, hung or cut off), or the store's rank 0
  // when the store is gone. "" when every peer failed too. Bounded by a few seconds.
  std::string waited_for(const std::string& message);
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
  std::string backend_, transport_;
  std::chrono::milliseconds timeout_{0};
};

// True when this LibTorch was built with NCCL (USE_C10D_NCCL).
bool nccl_available();

// Refuses, before any process group, what cannot work with this node's `gpu_count` GPUs
// (a parameter, so tests need no GPU; 0 leaves CUDA errors to device selection):
// --device cuda:N with N out of range, and NCCL (explicit, or the default for a CUDA device)
// with more local ranks than GPUs or with every local rank pinned to one --device cuda:N.
// NCCL needs a GPU per rank; sharing one fails inside NCCL ("Duplicate GPU detected").
// Throws ConfigError with one line that says what to change.
void check_gpus(const LaunchInfo& info, const std::string& device, int gpu_count);

// The environment that makes a failed or timed-out NCCL collective surface as an error from
// ProcessGroup::wait() within the timeout, under this LibTorch's variable names.
std::vector<std::pair<std::string, std::string>> nccl_error_handling_env();
// Sets it (create() does, before building a NCCL backend) unless the user chose a mode under
// any name (info.nccl_error_mode, read by resolve_launch); returns "NAME=VALUE" for each
// variable set.
std::vector<std::string> apply_nccl_error_handling_env(const LaunchInfo& info);

}  // namespace ctrain::distributed
