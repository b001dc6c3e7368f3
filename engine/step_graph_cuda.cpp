// --cuda-graph: TrainStep's whole step (forward, loss, backward, SGD's update and the running
// correct count) captured once per batch shape in a CUDA graph and replayed, so a step costs
// one graph launch instead of hundreds of kernel launches from the host. Compiled only where
// LibTorch has CUDA (CMake adds step_graph_none.cpp elsewhere).
//
// What capture demands (PyTorch's "whole-network capture" notes, and pytorch/tutorials'
// advanced_source/cpp_cuda_graphs/mnist.cpp), and how each is met here:
//  - fixed addresses: each batch shape has its own input and target buffers, never
//    reallocated; the batch is copied into them before each replay. Everything the step
//    allocates while it is captured comes from the graph's private pool and stays valid.
//  - state created by a first step (SGD's momentum buffers, cuDNN's algorithm choices, cuBLAS
//    workspaces): kGraphWarmup eager steps per shape first, on the side stream capture will use.
//  - gradients: set to None before capture, so the captured backward allocates them in the
//    graph's pool and each replay refills the same buffers; nothing outside replaces them.
//  - no host sync inside: only steps without one are captured (TrainStep::graph_applies says
//    which), and the model's manual-backward path is not used (its buffers are reallocated per
//    batch shape, outside any graph).
//  - the learning rate: LibTorch's SGD passes it to add_ as a host double, so it is baked into
//    the graph; the graphs are captured again when the schedule (StepLR) changes it.
//  - autocast: its weight cache is off while capturing, or bf16 copies of the weights made
//    before capture would be replayed forever.
//  - other threads (the loaders') keep working during capture: thread-local capture mode.
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <vector>

#include "core/error.h"
#include "engine/step.h"

namespace ctrain::engine {

struct StepGraphs {
  struct Shape {
    torch::Tensor input, target;  // the static buffers this shape's graph reads
    int eager_steps = 0;
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    torch::Tensor loss;  // written by each replay
  };
  std::map<std::vector<int64_t>, Shape> shapes;
  double lr = -1;  // the learning rate the graphs were captured with
  std::optional<c10::cuda::CUDAStream> side;
};

std::string TrainStep::graph_unavailable() { return ""; }

// Runs `f` on the side stream, ordered after the work queued so far on the current stream,
// with the current stream ordered after it.
template <class F>
static void on_stream(const c10::cuda::CUDAStream& side, F&& f) {
  const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream();
  c10::cuda::CUDAEvent before, after;
  before.record(current);
  before.block(side);
  {
    c10::cuda::CUDAStreamGuard guard(side);
    f();
  }
  after.record(side);
  after.block(current);
}

std::optional<TrainStep::Result> TrainStep::run_graph(const torch::Tensor& input, const torch::Tensor& target) {
  if (!graphs_) graphs_ = std::make_shared<StepGraphs>();
  StepGraphs& g = *graphs_;
  if (!g.side) g.side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device_.index());
  const double lr = optimizer_.param_groups().front().options().get_lr();
  if (lr != g.lr) {  // a new learning rate: every graph has the old one baked in
    for (auto& [sizes, s] : g.shapes) s.graph.reset();
    g.lr = lr;
  }
  StepGraphs::Shape& s = g.shapes[input.sizes().vec()];
  if (!s.input.defined()) {
    const bool nhwc = options_.channels_last && input.dim() == 4;
    const auto opts = input.options().device(device_);
    s.input = nhwc ? torch::empty(input.sizes(), opts, at::MemoryFormat::ChannelsLast) : torch::empty(input.sizes(), opts);
    s.target = torch::empty(target.sizes(), target.options().device(device_));
  }
  s.input.copy_(input, /*non_blocking=*/true);
  s.target.copy_(target, /*non_blocking=*/true);

  if (s.eager_steps < kGraphWarmup) {
    ++s.eager_steps;
    Result r;
    on_stream(*g.side, [&] { r = run_eager(s.input, s.target, /*first=*/true, /*last=*/true, /*accumulate=*/1); });
    return r;
  }
  if (!s.graph) {
    // The allocator cannot free cached blocks while a capture is under way: return them first
    // (the old graphs' pools after an LR change included), as torch.cuda.graph does on entry.
    c10::cuda::device_synchronize();
    c10::cuda::CUDACachingAllocator::emptyCache();
    zero_grad_to_none(optimizer_);  // the captured backward allocates them in the graph's pool
    on_stream(*g.side, [&] {
      const bool cache = at::autocast::is_autocast_cache_enabled();
      at::autocast::set_autocast_cache_enabled(false);
      s.graph = std::make_unique<at::cuda::CUDAGraph>();
      try {
        s.graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
        s.loss = run_eager(s.input, s.target, /*first=*/false, /*last=*/true, /*accumulate=*/1).loss;
        s.graph->capture_end();
      } catch (const std::exception& e) {
        at::autocast::set_autocast_cache_enabled(cache);
        // CUDAGraph cannot clean up a capture that never ended: end it on the stream, and keep
        // the graph object alive (leaked), since the allocators still hold a filter that points
        // at it. The run then stops with the real reason instead of a crash later.
        cudaGraph_t raw = nullptr;
        cudaStreamEndCapture(g.side->stream(), &raw);
        if (raw != nullptr) cudaGraphDestroy(raw);
        (void)cudaGetLastError();
        (void)s.graph.release();
        throw Error(std::string("--cuda-graph: capturing the training step failed: ") + e.what(),
                    "rerun without --cuda-graph (and report it: the step did something capture forbids)");
      }
      at::autocast::set_autocast_cache_enabled(cache);
    });
  }
  // Capture only recorded the step: this replay runs it, on the current stream.
  s.graph->replay();
  Result r;
  r.loss = s.loss;
  r.updated = true;
  return r;
}

}  // namespace ctrain::engine
