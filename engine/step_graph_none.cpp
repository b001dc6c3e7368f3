// --cuda-graph where LibTorch has no CUDA: nothing can be captured (step_graph_cuda.cpp is the
// real one). TrainStep asks graph_unavailable() first, so run_graph is never reached here.
#include "engine/step.h"

namespace ctrain::engine {

struct StepGraphs {};

std::string TrainStep::graph_unavailable() { return "this LibTorch was built without CUDA"; }

std::optional<TrainStep::Result> TrainStep::run_graph(const torch::Tensor&, const torch::Tensor&) {
  return std::nullopt;
}

}  // namespace ctrain::engine
