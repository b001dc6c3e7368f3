#include "engine/amp.h"

#include <cmath>

#include "core/error.h"
#include "core/torch_compat.h"

namespace ctrain::engine {

bool autocast_enabled(c10::DeviceType t) { return compat::autocast_enabled(t); }

AutocastGuard::AutocastGuard(c10::DeviceType device_type, at::ScalarType dtype)
    : type_(device_type), prev_enabled_(autocast_enabled(device_type)),
      prev_dtype_(compat::autocast_dtype(device_type)) {
  compat::set_autocast(type_, true, dtype);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  compat::set_autocast(type_, prev_enabled_, prev_dtype_);
}

bool GradScaler::unscale(const std::vector<torch::Tensor>& params) const {
  torch::NoGradGuard no_grad;
  const double inv = 1.0 / scale_;
  torch::Tensor found;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    torch::Tensor g = p.mutable_grad();
    const torch::Tensor bad = g.isfinite().logical_not().any();
    found = found.defined() ? found.logical_or(bad) : bad;
    g.mul_(inv);
  }
  return found.defined() && found.item<bool>();
}

void GradScaler::restore(double scale, int64_t growth_tracker) {
  if (!(std::isfinite(scale) && scale > 0.0) || growth_tracker < 0 || growth_tracker >= o_.growth_interval) {
    throw Error("saved fp16 loss scale " + std::to_string(scale) + " with growth tracker " +
                    std::to_string(growth_tracker) + " is not a state the scaler can reach",
                "the checkpoint is damaged or not ctrain's; resume from another one");
  }
  scale_ = scale;
  good_steps_ = growth_tracker;
}

void GradScaler::update(bool found_inf) {
  if (found_inf) {
    scale_ *= o_.backoff_factor;
    good_steps_ = 0;
  } else if (++good_steps_ == o_.growth_interval) {
    scale_ *= o_.growth_factor;
    good_steps_ = 0;
  }
}

}  // namespace ctrain::engine
