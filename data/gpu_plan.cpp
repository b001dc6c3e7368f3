#include "data/gpu_plan.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace ctrain::data {

augment::Sample describe_sample(const SamplePlan& p, const ImageTransform& t, int height, int width) {
  augment::Sample s;
  if (t.mode == Augment::kTrain) {  // the crop box, resized to the output as an image of its own
    s.rect_top = p.box.top;
    s.rect_left = p.box.left;
    s.resize = augment::plan_resize(p.box.height, p.box.width, t.size, t.size);
  } else {  // the whole image resized (Resize), then the window of the centre crop
    s.resize = augment::plan_resize(height, width, p.resize_h, p.resize_w);
    s.win_top = p.box.top;
    s.win_left = p.box.left;
  }
  s.flip = p.flip ? 1 : 0;
  const int rh = s.resize.y.src, rw = s.resize.x.src;
  if (s.rect_top < 0 || s.rect_left < 0 || rh < 1 || rw < 1 || s.rect_top + rh > height ||
      s.rect_left + rw > width || s.win_top < 0 || s.win_left < 0 ||
      s.win_top + t.size > s.resize.y.dst || s.win_left + t.size > s.resize.x.dst) {
    throw Error("planned crop " + std::to_string(rh) + "x" + std::to_string(rw) + " at (" +
                std::to_string(s.rect_top) + ", " + std::to_string(s.rect_left) + ") does not fit the " +
                std::to_string(height) + "x" + std::to_string(width) + " image");
  }
  return s;
}

Region region_read(const augment::Sample& s, int size) {
  // Resizing is separable: the rows read depend only on the output row, the columns only on
  // the output column, so the extremes over the window's rows and columns bound the region.
  auto extent = [&](bool is_x, int first, int count, int* lo, int* hi) {
    *lo = 1 << 30;
    *hi = -1;
    for (int d = first; d < first + count; ++d) {
      int a = 0, b = 0;
      augment::source_range(s.resize, is_x, d, &a, &b);
      *lo = std::min(*lo, a);
      *hi = std::max(*hi, b);
    }
  };
  int y0, y1, x0, x1;
  extent(false, s.win_top, size, &y0, &y1);
  extent(true, s.win_left, size, &x0, &x1);
  return {s.rect_top + y0, s.rect_left + x0, y1 - y0 + 1, x1 - x0 + 1};
}

void attach_pixels(augment::Sample* s, const Region& r, const uint8_t* pixels, int64_t pitch) {
  s->pixels = pixels;
  s->pitch = pitch;
  s->region_top = r.top;
  s->region_left = r.left;
  s->region_h = r.height;
  s->region_w = r.width;
}

augment::Normalize normalize_of(const ImageTransform& t) {
  augment::Normalize n;
  for (int c = 0; c < 3; ++c) {  // the CPU pipeline's normalize_into, term for term
    n.scale[c] = 1.0f / (255.0f * t.stdev[c]);
    n.shift[c] = -t.mean[c] / t.stdev[c];
  }
  return n;
}

void render_on_host(const augment::Sample& s, const augment::Normalize& n, int size, float* out) {
  const size_t plane = static_cast<size_t>(size) * size;
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < size; ++y) {
      for (int x = 0; x < size; ++x) {
        out[c * plane + static_cast<size_t>(y) * size + x] = augment::normalized(s, n, size, y, x, c);
      }
    }
  }
}

}  // namespace ctrain::data
