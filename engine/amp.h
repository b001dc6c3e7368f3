#pragma once
// Mixed precision: the autocast scope and fp16 loss scaling (PyTorch's GradScaler rules).
// How LibTorch's autocast API differs between 1.13 and 2.x is core/torch_compat.h's business.
#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <string>
#include <vector>

#include "engine/config.h"

namespace ctrain::engine {


// Autocast on `device_type` to `dtype` for the guard's lifetime (torch.autocast as a scope):
// ops on PyTorch's lower-precision list run in `dtype`, those on its fp32 list in float.
// Restores the previous state on exit, and clears the cast cache when the outermost scope
// ends, as torch.autocast's __exit__ does.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device_type, at::ScalarType dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType type_;
  bool prev_enabled_;
  at::ScalarType prev_dtype_;
};

// Whether autocast is on for `device_type` now (for tests and assertions).
bool autocast_enabled(c10::DeviceType device_type);

// Dynamic loss scaling with torch.cuda.amp.GradScaler's defaults and rules: the loss is
// multiplied by scale() before backward; unscale() divides the gradients by it and reports
// whether any is inf/NaN; such a step is skipped, and update() then multiplies the scale by
// backoff_factor; after growth_interval consecutive good steps it multiplies it by
// growth_factor. Under DDP the check runs on the averaged gradients, which are the same on
// every rank, so every rank skips the same steps without another collective.
class GradScaler {
 public:
  struct Options {
    double init_scale = 65536.0;
    double growth_factor = 2.0;
    double backoff_factor = 0.5;
    int64_t growth_interval = 2000;
  };
  GradScaler() : GradScaler(Options{}) {}
  explicit GradScaler(Options o) : o_(o), scale_(o.init_scale) {}

  double scale() const { return scale_; }
  int64_t growth_tracker() const { return good_steps_; }
  // Continues from a saved state (a resumed run); throws ctrain::Error for a scale that is not
  // positive and finite or a tracker outside [0, growth_interval).
  void restore(double scale, int64_t growth_tracker);
  torch::Tensor scale_loss(const torch::Tensor& loss) const { return loss * scale_; }
  // Divides every defined gradient in `params` by the scale; true if any is inf or NaN. One
  // host read (as GradScaler.step's found_inf.item() in PyTorch).
  bool unscale(const std::vector<torch::Tensor>& params) const;
  void update(bool found_inf);

 private:
  Options o_;
  double scale_;
  int64_t good_steps_ = 0;
};

}  // namespace ctrain::engine
