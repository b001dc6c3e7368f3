#include "distributed/ddp.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cmath>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>

#include "core/error.h"

namespace ctrain::distributed {

namespace {

// Tensors packed as raw bytes into one uint8 tensor, so that one collective moves them all
// whatever their dtypes (BatchNorm has float statistics and an int64 counter). Offsets are
// 16-byte aligned so each slice can be viewed as its tensor's dtype.
struct Packing {
  std::vector<int64_t> offset, nbytes;
  int64_t total = 0;
  explicit Packing(const std::vector<torch::Tensor>& ts) {
    for (const auto& t : ts) {
      offset.push_back(total);
      nbytes.push_back(t.numel() * static_cast<int64_t>(t.element_size()));
      total += (nbytes.back() + 15) / 16 * 16;
    }
  }
  torch::Tensor slot(const torch::Tensor& flat, size_t i, const torch::Tensor& like) const {
    return flat.narrow(0, offset[i], nbytes[i]).view(like.scalar_type()).view(like.sizes());
  }
  void pack(const std::vector<torch::Tensor>& ts, torch::Tensor& flat) const {
    for (size_t i = 0; i < ts.size(); ++i) slot(flat, i, ts[i]).copy_(ts[i]);
  }
  void unpack(const torch::Tensor& flat, std::vector<torch::Tensor>& ts) const {
    for (size_t i = 0; i < ts.size(); ++i) ts[i].copy_(slot(flat, i, ts[i]));
  }
};

}  // namespace

struct DistributedDataParallel::State {
  struct Bucket {
    std::vector<size_t> params;   // indices into State::params
    // All of the bucket's gradients, concatenated, then one "used on this rank" flag per
    // parameter: after the averaging allreduce a flag is > 0 iff some rank used it, which
    // costs no extra collective.
    torch::Tensor flat;
    int64_t flags_at = 0;         // offset of the flags in `flat`
    torch::Tensor flags_host;     // staging for the flags (CPU float)
    int pending = 0;              // gradients not yet copied in this backward
    c10::intrusive_ptr<c10d::Work> work;
  };
  ProcessGroup* pg = nullptr;
  std::shared_ptr<torch::nn::Module> module;
  std::vector<torch::Tensor> params;        // trainable parameters only
  std::vector<std::string> names;           // their names, for errors
  std::vector<size_t> bucket_of, offset_of, slot_of;  // slot_of: index within its bucket
  std::vector<char> ready;                  // per param: hook fired in this sync backward
  std::vector<char> used;                   // per param: hook fired since the last finish()
  std::vector<Bucket> buckets;
  size_t next_launch = 0;
  bool sync = true;
  // sync_buffers(): the module's buffers and their packing, taken once at construction (the
  // handles stay valid when Module::to() moves them: it swaps their data in place), and the
  // packed bytes, allocated once per device.
  std::vector<torch::Tensor> buffers;
  std::optional<Packing> buffer_packing;
  torch::Tensor buffer_flat;
  std::mutex mu;  // CUDA backward runs hooks on the device thread
  // Gradient accumulators are held only weakly by their variables; keeping them alive
  // keeps the hooks registered on them.
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;

  void copy_in(size_t i) {
    Bucket& b = buckets[bucket_of[i]];
    const torch::Tensor& g = params[i].grad();
    auto slot = b.flat.narrow(0, offset_of[i], params[i].numel());
    if (g.defined()) {
      slot.copy_(g.reshape({-1}));
    } else {
      slot.zero_();  // unused here: contributes zero, as in PyTorch's DDP
    }
    b.flags_host.data_ptr<float>()[slot_of[i]] = used[i] ? 1.0f : 0.0f;
    ready[i] = 1;
    --b.pending;
  }

  // Launches ready buckets in index order, so every rank issues the same sequence.
  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
      Bucket& b = buckets[next_launch];
      // non_blocking: no host sync on CUDA (a pageable source is staged before the call returns).
      b.flat.narrow(0, b.flags_at, static_cast<int64_t>(b.params.size()))
          .copy_(b.flags_host, /*non_blocking=*/true);
      b.flat.div_(pg->size());
      b.work = pg->allreduce_async(b.flat);
      ++next_launch;
    }
  }

  void on_grad_ready(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    used[i] = 1;
    if (!sync) return;
    if (ready[i]) {
      // PyTorch raises here too ("Expected to mark a variable ready only once"): the bucket
      // holding this gradient may already be on the wire, so the new one cannot join it.
      throw Error("DDP: parameter '" + names[i] +
                      "' received a second gradient in one synchronised step: backward() ran "
                      "again before the optimizer step (finish())",
                  "one backward per step; to accumulate micro-batches use --accumulate (no_sync)");
    }
    copy_in(i);
    launch_ready();
  }
};

namespace {

// Calls back after a parameter's AccumulateGrad node has updated .grad. Written against
// FunctionPostHook directly: LibTorch's LambdaPostHook changed signature between 1.13 and 2.x.
class GradReadyHook : public torch::autograd::FunctionPostHook {
 public:
  GradReadyHook(std::weak_ptr<DistributedDataParallel::State> state, size_t index)
      : state_(std::move(state)), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    if (auto s = state_.lock()) s->on_grad_ready(index_);
    return outputs;
  }

 private:
  std::weak_ptr<DistributedDataParallel::State> state_;
  size_t index_;
};

}  // namespace

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<torch::nn::Module> module,
                                                 ProcessGroup& pg, double bucket_mb)
    : state_(std::make_shared<State>()) {
  if (!(bucket_mb > 0)) throw ConfigError("--bucket-mb must be positive");
  state_->pg = &pg;
  state_->module = module;
  for (auto& item : module->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    state_->params.push_back(item.value());
    state_->names.push_back(item.key());
  }
  const size_t n = state_->params.size();
  state_->bucket_of.resize(n);
  state_->offset_of.resize(n);
  state_->slot_of.resize(n);
  state_->ready.assign(n, 0);
  state_->used.assign(n, 0);
  // Reverse order: the last layers' gradients are ready first in backward. A bucket holds
  // one dtype (it is one flat tensor) and about `bucket_mb`; a bigger tensor gets its own.
  const int64_t cap = static_cast<int64_t>(bucket_mb * 1024 * 1024);
  int64_t bytes = 0, numel = 0;
  for (size_t k = n; k-- > 0;) {
    const torch::Tensor& p = state_->params[k];
    const int64_t sz = p.numel() * p.element_size();
    auto& buckets = state_->buckets;
    if (buckets.empty() || (bytes > 0 && bytes + sz > cap) ||
        state_->params[buckets.back().params.front()].dtype() != p.dtype()) {
      buckets.emplace_back();
      bytes = numel = 0;
    }
    state_->bucket_of[k] = buckets.size() - 1;
    state_->offset_of[k] = static_cast<size_t>(numel);
    state_->slot_of[k] = buckets.back().params.size();
    buckets.back().params.push_back(k);
    bytes += sz;
    numel += p.numel();
  }
  for (auto& b : state_->buckets) {
    int64_t numel = 0;
    for (size_t j : b.params) numel += state_->params[j].numel();
    b.flags_at = numel;
    const auto count = static_cast<int64_t>(b.params.size());
    b.flat = torch::zeros({numel + count}, state_->params[b.params.front()].options());
    b.flags_host = torch::zeros({count}, torch::kFloat32);
  }
  state_->buffers = module->buffers();
  state_->buffer_packing.emplace(state_->buffers);
  for (size_t k = 0; k < n; ++k) {
    auto acc = torch::autograd::impl::grad_accumulator(state_->params[k]);
    acc->add_post_hook(std::make_unique<GradReadyHook>(state_, k));
    state_->accumulators.push_back(std::move(acc));
  }
  prepare(true);
}

DistributedDataParallel::~DistributedDataParallel() = default;

int64_t DistributedDataParallel::num_buckets() const {
  return static_cast<int64_t>(state_->buckets.size());
}

namespace {

// Every parameter (frozen ones too) and buffer, in registration order, with its name.
std::vector<std::pair<std::string, torch::Tensor>> all_tensors(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> v;
  for (const auto& p : m.named_parameters()) v.emplace_back(p.key(), p.value());
  for (const auto& b : m.named_buffers()) v.emplace_back(b.key(), b.value());
  return v;
}

std::string describe_parameter(const std::string& name, const torch::Tensor& t) {
  return name + " " + c10::str(t.sizes()) + " " + std::string(c10::toString(t.scalar_type()));
}

// After each rank has judged itself (`bad`), tells every rank which ranks are bad: one
// allreduce of a world-size vector, so a failing rank never leaves the others hanging in the
// next collective. Returns those ranks, comma-separated ("" when all are good).
std::string bad_ranks(ProcessGroup& pg, bool bad, const torch::Device& device,
                      const std::string& what) {
  torch::Tensor flags = torch::zeros({pg.size()}, torch::kInt32);
  flags[pg.rank()] = bad ? 1 : 0;
  torch::Tensor on = flags.to(device);
  pg.allreduce_sum(on, what);
  flags = on.cpu();
  std::string ranks;
  for (int r = 0; r < pg.size(); ++r) {
    if (flags[r].item<int32_t>() != 0) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  }
  return ranks;
}

// Rank 0's bytes of `s` on every rank (the length first, then the bytes).
std::string broadcast_string(ProcessGroup& pg, const std::string& s, const torch::Device& device,
                             const std::string& what) {
  std::vector<torch::Tensor> len{torch::tensor({static_cast<int64_t>(s.size())}, torch::kInt64).to(device)};
  pg.broadcast(len, 0, what);
  const int64_t n = len[0].cpu().item<int64_t>();
  torch::Tensor bytes = torch::zeros({n}, torch::kUInt8);
  if (pg.rank() == 0) std::memcpy(bytes.data_ptr<uint8_t>(), s.data(), s.size());
  std::vector<torch::Tensor> v{bytes.to(device)};
  pg.broadcast(v, 0, what);
  const torch::Tensor got = v[0].cpu();
  return std::string(reinterpret_cast<const char*>(got.data_ptr<uint8_t>()), static_cast<size_t>(n));
}

torch::Device device_of(const torch::nn::Module& m, ProcessGroup& pg) {
  const auto params = m.parameters();
  // NCCL reduces device tensors only; Gloo takes CPU (and, where built so, CUDA) tensors.
  if (pg.backend() == "nccl" && !params.empty()) return params.front().device();
  return torch::kCPU;
}

}  // namespace

void DistributedDataParallel::broadcast_from_rank0() {
  State& s = *state_;
  ProcessGroup& pg = *s.pg;
  const auto tensors = all_tensors(*s.module);
  const torch::Device dev = device_of(*s.module, pg);
  // 1. The same model everywhere: names, shapes and dtypes as text, compared with rank 0's.
  std::vector<std::string> mine;
  std::string text;
  for (const auto& [name, t] : tensors) {
    mine.push_back(describe_parameter(name, t));
    text += mine.back() + "\n";
  }
  const std::string theirs = broadcast_string(pg, text, dev, "broadcast of rank 0's model layout");
  std::string diff;
  if (theirs != text) {
    std::vector<std::string> lines;
    std::stringstream in(theirs);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    size_t i = 0;
    while (i < lines.size() && i < mine.size() && lines[i] == mine[i]) ++i;
    diff = "rank 0 has " + (i < lines.size() ? lines[i] : "no more tensors") + ", rank " +
           std::to_string(pg.rank()) + " has " + (i < mine.size() ? mine[i] : "no more tensors") +
           " (tensor " + std::to_string(i) + " of " + std::to_string(lines.size()) + " on rank 0)";
  }
  const std::string bad = bad_ranks(pg, !diff.empty(), dev, "model layout check");
  if (!bad.empty()) {
    throw Error(diff.empty() ? "rank(s) " + bad + " built another model than rank 0 (see their errors)"
                             : "rank " + std::to_string(pg.rank()) +
                                   " built another model than rank 0: first difference: " + diff,
                "every rank must run the same program with the same model flags");
  }
  // 2. Rank 0's values everywhere, in one coalesced broadcast.
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> ts;
  for (const auto& item : tensors) ts.push_back(item.second.detach());
  if (!ts.empty()) {
    const Packing packing(ts);
    torch::Tensor flat = torch::empty({packing.total}, ts.front().options().dtype(torch::kUInt8));
    if (pg.rank() == 0) packing.pack(ts, flat);
    std::vector<torch::Tensor> v{flat};
    pg.broadcast(v, 0, "broadcast of initial parameters from rank 0");
    if (pg.rank() != 0) packing.unpack(flat, ts);
  }
  check_replicas("after the initial broadcast");
}

void DistributedDataParallel::check_replicas(const std::string& when) {
  State& s = *state_;
  ProcessGroup& pg = *s.pg;
  const auto tensors = all_tensors(*s.module);
  if (tensors.empty()) return;
  const torch::Device dev = device_of(*s.module, pg);
  torch::NoGradGuard no_grad;
  // A float64 sum per tensor: equal tensors give bit-equal sums on equal hardware.
  std::vector<torch::Tensor> sums;
  for (const auto& item : tensors) sums.push_back(item.second.detach().to(torch::kFloat64).sum().cpu());
  const torch::Tensor mine = torch::stack(sums);
  std::vector<torch::Tensor> v{mine.to(dev, /*non_blocking=*/false, /*copy=*/true)};  // not in place
  pg.broadcast(v, 0, "broadcast of rank 0's parameter checksums");
  const torch::Tensor theirs = v[0].cpu();
  std::string diff;
  for (int64_t i = 0; i < mine.size(0) && diff.empty(); ++i) {
    const double a = theirs[i].item<double>(), b = mine[i].item<double>();
    if (!(a == b) && !(std::isnan(a) && std::isnan(b))) {
      diff = tensors[static_cast<size_t>(i)].first + " (checksum " + c10::str(b) + " here, " +
             c10::str(a) + " on rank 0)";
    }
  }
  const std::string bad = bad_ranks(pg, !diff.empty(), dev, "parameter checksum check");
  if (!bad.empty()) {
    throw Error(diff.empty() ? "rank(s) " + bad + " hold other parameter values than rank 0 " + when +
                                   " (see their errors)"
                             : "rank " + std::to_string(pg.rank()) +
                                   " holds other parameter values than rank 0 " + when + ": " + diff,
                "the replicas diverged; this is a bug in the broadcast or in code that changes "
                "one rank's parameters");
  }
}

void DistributedDataParallel::sync_buffers() {
  State& s = *state_;
  if (s.buffers.empty()) return;
  torch::NoGradGuard no_grad;
  const Packing& packing = *s.buffer_packing;
  if (!s.buffer_flat.defined() || s.buffer_flat.device() != s.buffers.front().device()) {
    s.buffer_flat = torch::empty({packing.total}, s.buffers.front().options().dtype(torch::kUInt8));
  }
  if (s.pg->rank() == 0) packing.pack(s.buffers, s.buffer_flat);
  std::vector<torch::Tensor> v{s.buffer_flat};
  s.pg->broadcast(v, 0, "broadcast of buffers from rank 0");
  if (s.pg->rank() != 0) packing.unpack(s.buffer_flat, s.buffers);
}

void DistributedDataParallel::prepare(bool sync) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->sync = sync;
  state_->next_launch = 0;
  std::fill(state_->ready.begin(), state_->ready.end(), 0);
  for (auto& b : state_->buckets) {
    b.pending = static_cast<int>(b.params.size());
    b.work.reset();
  }
}

void DistributedDataParallel::finish() {
  State& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.sync) return;
    // Parameters whose hook did not fire in this backward join with their accumulated .grad
    // (no_sync micro-batches), or zeros.
    for (size_t i = 0; i < s.params.size(); ++i) {
      if (!s.ready[i]) s.copy_in(i);
    }
    s.launch_ready();
  }
  torch::NoGradGuard no_grad;
  for (size_t b = 0; b < s.buckets.size(); ++b) {
    auto& bucket = s.buckets[b];
    s.pg->wait(bucket.work, "allreduce of DDP bucket " + std::to_string(b));
    for (size_t i : bucket.params) {
      torch::Tensor& p = s.params[i];
      // Used here means used somewhere; only a parameter unused on this rank needs the
      // reduced flag, and reading it is a host sync, paid only by models with such params.
      if (!s.used[i] &&
          bucket.flat[bucket.flags_at + static_cast<int64_t>(s.slot_of[i])].item<double>() == 0.0) {
        continue;  // unused on every rank: .grad stays as it is, as in PyTorch
      }
      auto avg = bucket.flat.narrow(0, s.offset_of[i], p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(avg);
      } else {
        p.mutable_grad() = avg.clone();
      }
    }
  }
  std::fill(s.used.begin(), s.used.end(), 0);
  prepare(true);
}

}  // namespace ctrain::distributed
