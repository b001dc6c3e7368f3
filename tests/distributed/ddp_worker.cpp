// One rank of a DDP test scenario, started as a real process by ddp_test with torchrun's
// variables. Writes its results (tensors) to --out/<scenario>_rank<R>.pt.
//   grads:  one forward/backward on this rank's half of a fixed batch; saves the averaged grads
//   steps:  five momentum-SGD steps on this rank's halves; saves the parameters
//   die:    rank 1 SIGKILLs itself; rank 0's next allreduce must fail
//   hang:   rank 1 sleeps; rank 0's next allreduce must time out (--dist-timeout)
#include <CLI/CLI.hpp>
#include <csignal>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>

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
    torch::manual_seed(100 + rank);  // different init per rank: the broadcast must fix it
    auto model = std::make_shared<ctrain::models::MlpImpl>(ctrain::models::MlpOptions{8, 6, 5, 3});
    DistributedDataParallel ddp(model, *pg, bucket_mb);
    ddp.broadcast_from_rank0();
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
      // Each rank's BatchNorm sees different data; after sync_buffers() every rank holds
      // rank 0's running statistics.
      torch::nn::BatchNorm1d bn(4);
      auto x = torch::randn({8, 4}) * (rank + 1) + rank;
      bn->train();
      bn->forward(x);  // running stats now differ by rank
      auto bn_ddp_module = std::make_shared<torch::nn::Sequential>(bn);
      DistributedDataParallel bn_ddp(bn_ddp_module->ptr(), *pg, bucket_mb);
      bn_ddp.sync_buffers();
      torch::save(std::vector<torch::Tensor>{bn->running_mean, bn->running_var}, file);
    } else if (scenario == "die" || scenario == "hang") {
      if (rank == 1) {
        if (scenario == "die") ::kill(::getpid(), SIGKILL);
        std::this_thread::sleep_for(std::chrono::seconds(120));
        return 0;
      }
      auto [x, y] = global_batch(0);
      ddp.prepare(true);
      torch::nn::functional::cross_entropy(model->forward(shard(x)), shard(y)).backward();
      ddp.finish();  // must throw: the peer is gone or silent
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
