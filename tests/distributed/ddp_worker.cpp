// One rank of a DDP test scenario, started as a real process by ddp_test with torchrun's
// variables. Writes its results (tensors) to --out/<scenario>_rank<R>.pt.
//   grads:  one forward/backward on this rank's half of a fixed batch; saves the averaged grads
//   steps:  five momentum-SGD steps on this rank's halves; saves the parameters
//   buffers: BatchNorm statistics (and num_batches_tracked) differ by rank; saves them before
//            and after sync_buffers()
//   unused:  a layer no rank uses and one only rank 0 uses; two momentum-SGD steps; saves
//            each layer's weight and whether its grad is defined
//   twice:   a second backward before finish() must throw on every rank
//   mismatch: rank 1 builds a wider hidden layer; broadcast_from_rank0() must throw everywhere
//   diverge: rank 1 changes a weight after the broadcast; check_replicas() must throw
//   die:    rank 1 SIGKILLs itself; rank 0's next allreduce must fail (a hung rank is
//           tests/faults' HungRankMakesTheJobFailWithinTheTimeout, on the real trainer)
// A scenario that expects an error prints "expected error: ..." and exits 0.
#include <CLI/CLI.hpp>
#include <csignal>
#include <unistd.h>

#include <chrono>
#include <iostream>

#include "core/error.h"
#include "distributed/ddp.h"
#include "distributed/process_group.h"
#include "models/mlp.h"

namespace {

using ctrain::distributed::DistributedDataParallel;

// The fixed global batch every scenario uses: 16 samples of 8 features, 3 classes.
std::pair<torch::Tensor, torch::Tensor> global_batch(int step) {
  auto g = at::detail::createCPUGenerator(1000 + step);
  return {torch::randn({16, 8}, g), torch::randint(0, 3, {16}, g)};
}

// Three heads on one input: `used` by every rank, `partial` by rank 0 only, `unused` by none.
struct ThreeHeadsImpl : torch::nn::Module {
  torch::nn::Linear used{nullptr}, partial{nullptr}, unused{nullptr};
  ThreeHeadsImpl() {
    used = register_module("used", torch::nn::Linear(8, 3));
    partial = register_module("partial", torch::nn::Linear(8, 3));
    unused = register_module("unused", torch::nn::Linear(8, 3));
  }
  torch::Tensor forward(const torch::Tensor& x, bool with_partial) {
    return with_partial ? used->forward(x) + partial->forward(x) : used->forward(x);
  }
};

void zero_grad_to_none(torch::nn::Module& m) {
  for (auto& p : m.parameters()) {
    if (p.grad().defined()) p.mutable_grad().reset();
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string scenario, out;
  double bucket_mb = 25, timeout_s = 30;
  CLI::App app{"ddp_worker"};
  app.add_option("--scenario", scenario)->required();
  app.add_option("--out", out)->required();
  app.add_option("--bucket-mb", bucket_mb);
  app.add_option("--timeout", timeout_s);
  CLI11_PARSE(app, argc, argv);
  try {
    const auto info = ctrain::distributed::resolve_launch({}, ctrain::distributed::process_env());
    auto pg = ctrain::distributed::ProcessGroup::create(
        info, "gloo", torch::kCPU, std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
    const int rank = pg->rank(), world = pg->size();
    if (rank == 0) std::cout << "transport: " << pg->transport() << std::endl;
    torch::manual_seed(100 + rank);  // different init per rank: the broadcast must fix it
    const int64_t hidden = scenario == "mismatch" && rank == 1 ? 7 : 6;
    auto model = std::make_shared<ctrain::models::MlpImpl>(ctrain::models::MlpOptions{8, hidden, 5, 3});
    DistributedDataParallel ddp(model, *pg, bucket_mb);
    try {
      ddp.broadcast_from_rank0();
    } catch (const ctrain::Error& e) {
      if (scenario != "mismatch") throw;
      std::cout << "expected error: " << e.what() << std::endl;
      return 0;
    }
    const std::string file = out + "/" + scenario + "_rank" + std::to_string(rank) + ".pt";
    auto shard = [&](const torch::Tensor& t) {
      const int64_t per = t.size(0) / world;
      return t.slice(0, rank * per, (rank + 1) * per);
    };
    if (scenario == "grads") {
      auto [x, y] = global_batch(0);
      ddp.prepare(true);
      torch::nn::functional::cross_entropy(model->forward(shard(x)), shard(y)).backward();
      ddp.finish();
      std::vector<torch::Tensor> grads;
      for (auto& p : model->parameters()) grads.push_back(p.grad());
      torch::save(grads, file);
    } else if (scenario == "steps") {
      torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
      for (int step = 0; step < 5; ++step) {
        auto [x, y] = global_batch(step);
        opt.zero_grad();
        ddp.prepare(true);
        torch::nn::functional::cross_entropy(model->forward(shard(x)), shard(y)).backward();
        ddp.finish();
        opt.step();
      }
      torch::save(model->parameters(), file);
    } else if (scenario == "buffers") {
      // Each rank's BatchNorm sees different data, rank 1 twice (so num_batches_tracked
      // differs too); after sync_buffers() every rank must hold rank 0's statistics.
      torch::nn::BatchNorm1d bn(4);
      bn->train();
      for (int k = 0; k <= rank; ++k) bn->forward(torch::randn({8, 4}) * (rank + 1) + rank);
      auto bn_ddp_module = std::make_shared<torch::nn::Sequential>(bn);
      DistributedDataParallel bn_ddp(bn_ddp_module->ptr(), *pg, bucket_mb);
      std::vector<torch::Tensor> saved{bn->running_mean.clone(), bn->running_var.clone(),
                                       bn->num_batches_tracked.clone()};
      bn_ddp.sync_buffers();
      for (auto& b : {bn->running_mean, bn->running_var, bn->num_batches_tracked}) saved.push_back(b);
      torch::save(saved, file);
    } else if (scenario == "unused") {
      torch::manual_seed(7 + rank);
      auto heads = std::make_shared<ThreeHeadsImpl>();
      DistributedDataParallel hd(heads, *pg, bucket_mb);
      hd.broadcast_from_rank0();
      const auto before = heads->unused->weight.clone();
      torch::optim::SGD opt(heads->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(0.01));
      for (int step = 0; step < 2; ++step) {
        auto [x, y] = global_batch(step);
        zero_grad_to_none(*heads);
        hd.prepare(true);
        torch::nn::functional::cross_entropy(heads->forward(shard(x), rank == 0), shard(y)).backward();
        hd.finish();
        opt.step();
      }
      auto defined = [](const torch::Tensor& p) { return torch::tensor({p.grad().defined() ? 1 : 0}); };
      torch::save(std::vector<torch::Tensor>{
                      heads->used->weight, heads->partial->weight, heads->unused->weight, before,
                      defined(heads->used->weight), defined(heads->partial->weight),
                      defined(heads->unused->weight)},
                  file);
    } else if (scenario == "twice") {
      auto [x, y] = global_batch(0);
      ddp.prepare(true);
      auto loss = torch::nn::functional::cross_entropy(model->forward(shard(x)), shard(y));
      loss.backward({}, /*retain_graph=*/true);
      try {
        loss.backward();
      } catch (const std::exception& e) {
        std::cout << "expected error: " << e.what() << std::endl;
        return 0;
      }
      std::cerr << "ddp_worker: a second backward before finish() did not throw\n";
      return 1;
    } else if (scenario == "mismatch") {
      std::cerr << "ddp_worker: ranks with different models passed broadcast_from_rank0()\n";
      return 1;
    } else if (scenario == "diverge") {
      if (rank == 1) {
        torch::NoGradGuard no_grad;
        model->parameters()[2].add_(1e-3);
      }
      try {
        ddp.check_replicas("in the test");
      } catch (const ctrain::Error& e) {
        std::cout << "expected error: " << e.what() << std::endl;
        return 0;
      }
      std::cerr << "ddp_worker: check_replicas() found no difference\n";
      return 1;
    } else if (scenario == "die") {
      if (rank == 1) ::kill(::getpid(), SIGKILL);
      auto [x, y] = global_batch(0);
      ddp.prepare(true);
      torch::nn::functional::cross_entropy(model->forward(shard(x)), shard(y)).backward();
      ddp.finish();  // must throw: the peer is gone
      std::cerr << "ddp_worker: finish() returned although rank 1 is gone\n";
      return 0;
    } else {
      std::cerr << "unknown scenario " << scenario << "\n";
      return 2;
    }
  } catch (const std::exception& e) {
    std::cerr << "ddp_worker: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
