#include "engine/evaluate.h"

#include "core/stop.h"

namespace ctrain::engine {

std::array<double, 3> global_sums(const torch::Tensor& loss_sum, const torch::Tensor& correct,
                                  int64_t samples, distributed::ProcessGroup* pg,
                                  const std::string& what) {
  const auto dev = loss_sum.device();
  torch::Tensor sums = torch::stack({loss_sum.to(torch::kDouble), correct.to(torch::kDouble),
                                     torch::full({}, static_cast<double>(samples),
                                                 torch::TensorOptions().dtype(torch::kDouble).device(dev))});
  // Gloo reduces host tensors; NCCL only device tensors.
  if (pg != nullptr && pg->backend() != "nccl") sums = sums.cpu();
  if (pg != nullptr) pg->allreduce_sum(sums, "allreduce of " + what);
  sums = sums.cpu();
  return {sums[0].item<double>(), sums[1].item<double>(), sums[2].item<double>()};
}

EvalStats evaluate(Model& model, data::BatchSource& data, torch::Device device,
                   distributed::ProcessGroup* pg, bool channels_last) {
  torch::NoGradGuard no_grad;
  model.module->eval();
  data.start_epoch(0);
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(device));
  torch::Tensor correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt64).device(device));
  int64_t samples = 0;
  while (auto batch = data.next()) {
    throw_if_stopped("during evaluation");
    // One copy: to the device and, with channels_last, into NHWC at once.
    const torch::Tensor x = batch->input.to(
        torch::TensorOptions().device(device), /*non_blocking=*/true, /*copy=*/false,
        channels_last && batch->input.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Preserve);
    const torch::Tensor y = batch->target.to(device, /*non_blocking=*/true);
    const torch::Tensor logits = model.forward(x);
    loss_sum += torch::nn::functional::cross_entropy(
        logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    correct += logits.argmax(1).eq(y).sum();
    samples += y.size(0);
  }
  const auto sums = global_sums(loss_sum, correct, samples, pg, "evaluation metrics");
  EvalStats s;
  s.samples = static_cast<int64_t>(sums[2]);
  if (s.samples > 0) {
    s.loss = sums[0] / s.samples;
    s.acc = sums[1] / s.samples;
  }
  return s;
}

}  // namespace ctrain::engine
