#include "distributed/ddp.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <mutex>

#include "core/error.h"

namespace ctrain::distributed {

struct DistributedDataParallel::State {
  struct Bucket {
    std::vector<size_t> params;   // indices into State::params
    torch::Tensor flat;           // all of the bucket's gradients, concatenated
    int pending = 0;              // gradients not yet copied in this backward
    c10::intrusive_ptr<c10d::Work> work;
  };
  ProcessGroup* pg = nullptr;
  std::shared_ptr<torch::nn::Module> module;
  std::vector<torch::Tensor> params;        // trainable parameters only
  std::vector<size_t> bucket_of, offset_of;
  std::vector<char> ready;                  // per param, this backward
  std::vector<Bucket> buckets;
  size_t next_launch = 0;
  bool sync = true;
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
      slot.zero_();  // unused in this forward: contributes zero, as in PyTorch's DDP
    }
    ready[i] = 1;
    --b.pending;
  }

  // Launches ready buckets in index order, so every rank issues the same sequence.
  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
      Bucket& b = buckets[next_launch];
      b.flat.div_(pg->size());
      b.work = pg->allreduce_async(b.flat);
      ++next_launch;
    }
  }

  void on_grad_ready(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    if (!sync || ready[i]) return;
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
  for (auto& p : module->parameters()) {
    if (p.requires_grad()) state_->params.push_back(p);
  }
  const size_t n = state_->params.size();
  state_->bucket_of.resize(n);
  state_->offset_of.resize(n);
  state_->ready.assign(n, 0);
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
    buckets.back().params.push_back(k);
    bytes += sz;
    numel += p.numel();
  }
  for (auto& b : state_->buckets) {
    int64_t numel = 0;
    for (size_t j : b.params) numel += state_->params[j].numel();
    b.flat = torch::zeros({numel}, state_->params[b.params.front()].options());
  }
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

void DistributedDataParallel::broadcast_from_rank0() {
  // All parameters (frozen ones too) and buffers (BatchNorm statistics); the list is the same
  // on every rank because the module is built from the same options.
  std::vector<torch::Tensor> tensors = state_->module->parameters();
  for (auto& b : state_->module->buffers()) tensors.push_back(b);
  torch::NoGradGuard no_grad;
  for (auto& t : tensors) {
    std::vector<torch::Tensor> one{t.detach()};
    state_->pg->broadcast(one, 0, "broadcast of initial parameters from rank 0");
  }
}

void DistributedDataParallel::sync_buffers() {
  std::vector<torch::Tensor> bufs;
  for (auto& b : state_->module->buffers()) {
    if (b.is_floating_point()) bufs.push_back(b);
  }
  if (bufs.empty()) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat{torch::cat([&] {
    std::vector<torch::Tensor> v;
    for (auto& b : bufs) v.push_back(b.reshape({-1}));
    return v;
  }())};
  state_->pg->broadcast(flat, 0, "broadcast of buffers from rank 0");
  int64_t offset = 0;
  for (auto& b : bufs) {
    b.copy_(flat[0].narrow(0, offset, b.numel()).view(b.sizes()));
    offset += b.numel();
  }
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
    // Parameters whose hook did not fire (not used in this forward) join with zeros.
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
      auto avg = bucket.flat.narrow(0, s.offset_of[i], p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(avg);
      } else {
        p.mutable_grad() = avg.clone();
      }
    }
  }
  prepare(true);
}

}  // namespace ctrain::distributed
