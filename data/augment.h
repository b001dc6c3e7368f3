#pragma once
// The per-pixel arithmetic of the image transform (crop, resize, flip, normalize), written once
// for the host and the GPU: the GPU pipeline's kernel (augment_cuda.cu) runs these functions,
// and a CPU test runs the same ones against the CPU pipeline's output.
//
// The resize reproduces what the CPU pipeline gets from OpenCV 4.6's cv::resize on 8-bit RGB
// (INTER_AREA when shrinking, INTER_LINEAR otherwise), including its fixed-point linear path
// and its float area sums, so the CPU and GPU pipelines give the same pixels for the same crop.
// Written by hand because no library runs OpenCV's arithmetic on the GPU (OpenCV's CUDA
// resize is a different algorithm, and C++ OpenCV is not even on the GPU node). The order of
// every float operation matters: nvcc must compile this with -fmad=false, as a fused
// multiply-add rounds differently from OpenCV's separate multiply and add.
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define CTRAIN_HD __host__ __device__ inline
#else
#define CTRAIN_HD inline
#endif

namespace ctrain::data::augment {

// How cv::resize treats one call, decided once per image.
enum ResizeMode : int { kCopy, kAreaFast, kAreaGeneric, kLinear, kLinearAreaMode };

struct Axis {
  int src = 1, dst = 1;   // sizes
  double scale = 1, inv = 1;  // OpenCV's: inv = dst/src, scale = 1/inv (not src/dst)
  int iscale = 1;         // cvRound(scale)
};

struct Resize {
  Axis y, x;
  int mode = kCopy;
};

CTRAIN_HD int floor_f(float v) { int i = static_cast<int>(v); return i - (i > v); }
CTRAIN_HD int floor_d(double v) { int i = static_cast<int>(v); return i - (i > v); }
CTRAIN_HD int ceil_d(double v) { int i = static_cast<int>(v); return i + (i < v); }
// cvRound: half to even, as rint does in the default rounding mode.
CTRAIN_HD int round_f(float v) { return static_cast<int>(rintf(v)); }
CTRAIN_HD int round_d(double v) { return static_cast<int>(rint(v)); }
CTRAIN_HD int clamp_i(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
CTRAIN_HD double min_d(double a, double b) { return a < b ? a : b; }

CTRAIN_HD Axis make_axis(int src, int dst) {
  Axis a;
  a.src = src;
  a.dst = dst;
  a.inv = static_cast<double>(dst) / src;
  a.scale = 1.0 / a.inv;
  a.iscale = round_d(a.scale);
  return a;
}

// The CPU pipeline's choice (data/decode_opencv.cpp, resize_rect): INTER_AREA when either side
// shrinks, INTER_LINEAR otherwise; then OpenCV's own dispatch of that interpolation.
CTRAIN_HD Resize plan_resize(int src_h, int src_w, int dst_h, int dst_w) {
  Resize r;
  r.y = make_axis(src_h, dst_h);
  r.x = make_axis(src_w, dst_w);
  if (src_h == dst_h && src_w == dst_w) {
    r.mode = kCopy;
    return r;
  }
  bool area = dst_h < src_h || dst_w < src_w;
  const double eps = 2.220446049250313e-16;  // DBL_EPSILON
  const double ex = r.x.scale - r.x.iscale, ey = r.y.scale - r.y.iscale;
  const bool fast = (ex < 0 ? -ex : ex) < eps && (ey < 0 ? -ey : ey) < eps;
  if (!area && fast && r.x.iscale == 2 && r.y.iscale == 2) area = true;  // 2x down is a box average
  if (area && r.x.scale >= 1 && r.y.scale >= 1) {
    r.mode = fast ? kAreaFast : kAreaGeneric;
  } else {
    r.mode = area ? kLinearAreaMode : kLinear;
  }
  return r;
}

// A two-tap fixed-point linear tap: source indices s0, s1 and their 11-bit weights.
struct Tap {
  int s0 = 0, s1 = 0, w0 = 2048, w1 = 0;
};

CTRAIN_HD int sat_s16(float v) { return clamp_i(round_f(v), -32768, 32767); }

CTRAIN_HD Tap linear_tap(const Axis& a, int d, bool area_mode, bool is_x) {
  float f;
  int s;
  if (!area_mode) {
    f = static_cast<float>((d + 0.5) * a.scale - 0.5);
    s = floor_f(f);
    f -= s;
  } else {
    s = floor_d(d * a.scale);
    f = static_cast<float>((d + 1) - (s + 1) * a.inv);
    f = f <= 0 ? 0.f : f - floor_f(f);
  }
  Tap t;
  if (is_x) {  // OpenCV clamps the column and its weight; rows are only clipped
    if (s < 0) f = 0, s = 0;
    if (s >= a.src - 1) f = 0, s = a.src - 1;
    t.s0 = s;
    t.s1 = s + 1 < a.src ? s + 1 : a.src - 1;
  } else {
    t.s0 = clamp_i(s, 0, a.src - 1);
    t.s1 = clamp_i(s + 1, 0, a.src - 1);
  }
  t.w0 = sat_s16((1.f - f) * 2048);
  t.w1 = sat_s16(f * 2048);
  return t;
}

// The source cells an output index covers in the general area path: a partial head cell,
// whole cells [s1, s2) and a partial tail cell, each with its weight, in OpenCV's table order.
struct Span {
  int s1 = 0, s2 = 0;
  bool head = false, tail = false;
  float a_head = 0, a_mid = 0, a_tail = 0;
};

CTRAIN_HD Span area_span(const Axis& a, int d) {
  Span sp;
  const double f1 = d * a.scale, f2 = f1 + a.scale;
  const double cw = min_d(a.scale, a.src - f1);
  int s1 = ceil_d(f1), s2 = floor_d(f2);
  s2 = s2 < a.src - 1 ? s2 : a.src - 1;
  s1 = s1 < s2 ? s1 : s2;
  sp.s1 = s1;
  sp.s2 = s2;
  sp.head = s1 - f1 > 1e-3;
  sp.a_head = static_cast<float>((s1 - f1) / cw);
  sp.a_mid = static_cast<float>(1.0 / cw);
  sp.tail = f2 - s2 > 1e-3;
  sp.a_tail = static_cast<float>(min_d(min_d(f2 - s2, 1.0), cw) / cw);
  return sp;
}

// The source indices [*lo, *hi] that output index d of axis `a` reads (weight zero included).
CTRAIN_HD void source_range(const Resize& r, bool is_x, int d, int* lo, int* hi) {
  const Axis& a = is_x ? r.x : r.y;
  switch (r.mode) {
    case kCopy:
      *lo = *hi = d;
      return;
    case kAreaFast:
      *lo = d * a.iscale;
      *hi = *lo + a.iscale - 1;
      return;
    case kAreaGeneric: {
      const Span sp = area_span(a, d);
      *lo = sp.head ? sp.s1 - 1 : sp.s1;
      *hi = sp.tail ? sp.s2 : sp.s2 - 1;
      if (*hi < *lo) *hi = *lo;
      return;
    }
    default: {
      const Tap t = linear_tap(a, d, r.mode == kLinearAreaMode, is_x);
      *lo = t.s0 < t.s1 ? t.s0 : t.s1;
      *hi = t.s0 < t.s1 ? t.s1 : t.s0;
      return;
    }
  }
}

// One sample: which pixels the kernel reads and what it makes of them. The rectangle
// (rect_top, rect_left, resize.y.src x resize.x.src) of the stored image is resized to
// resize.y.dst x resize.x.dst, and the output is the size x size window at (win_top, win_left)
// of that, mirrored when `flip`. Train: the crop box, resized to the output, window (0, 0).
// Eval: the whole image resized to Resize(256)'s size, window = the centre crop.
// `pixels` holds the decoded region (region_top, region_left, region_h x region_w) of the
// stored image as RGB rows `pitch` bytes apart; it must cover every pixel the resize reads.
struct Sample {
  const uint8_t* pixels = nullptr;
  int64_t pitch = 0;
  int region_top = 0, region_left = 0, region_h = 0, region_w = 0;
  int rect_top = 0, rect_left = 0;
  Resize resize;
  int win_top = 0, win_left = 0;
  int flip = 0;
};

// ToTensor + Normalize: value * scale[c] + shift[c], as the CPU pipeline computes it.
struct Normalize {
  float scale[3], shift[3];
};

CTRAIN_HD uint8_t source_pixel(const Sample& s, int y, int x, int c) {
  return s.pixels[static_cast<int64_t>(s.rect_top + y - s.region_top) * s.pitch +
                  static_cast<int64_t>(s.rect_left + x - s.region_left) * 3 + c];
}

// The resized 8-bit value of output pixel (oy, ox), channel c, before normalization: what
// cv::resize writes for that pixel, bit for bit.
CTRAIN_HD uint8_t resampled(const Sample& s, int size, int oy, int ox, int c) {
  const int dy = s.win_top + oy;
  const int dx = s.win_left + (s.flip ? size - 1 - ox : ox);
  const Resize& r = s.resize;
  switch (r.mode) {
    case kCopy:
      return source_pixel(s, dy, dx, c);
    case kAreaFast: {
      const int iy = r.y.iscale, ix = r.x.iscale;
      int sum = 0;
      for (int j = 0; j < iy; ++j) {
        for (int i = 0; i < ix; ++i) sum += source_pixel(s, dy * iy + j, dx * ix + i, c);
      }
      if (ix == 2 && iy == 2) return static_cast<uint8_t>((sum + 2) >> 2);
      return static_cast<uint8_t>(clamp_i(round_f(static_cast<float>(sum) * (1.f / static_cast<float>(ix * iy))), 0, 255));
    }
    case kAreaGeneric: {
      const Span sy = area_span(r.y, dy), sx = area_span(r.x, dx);
      float sum = 0.f;
      // One source row's contribution, as OpenCV's horizontal pass builds it: head, middle, tail.
      auto row = [&](int y) {
        float buf = 0.f;
        if (sx.head) buf = buf + static_cast<float>(source_pixel(s, y, sx.s1 - 1, c)) * sx.a_head;
        for (int x = sx.s1; x < sx.s2; ++x) buf = buf + static_cast<float>(source_pixel(s, y, x, c)) * sx.a_mid;
        if (sx.tail) buf = buf + static_cast<float>(source_pixel(s, y, sx.s2, c)) * sx.a_tail;
        return buf;
      };
      if (sy.head) sum = sum + sy.a_head * row(sy.s1 - 1);
      for (int y = sy.s1; y < sy.s2; ++y) sum = sum + sy.a_mid * row(y);
      if (sy.tail) sum = sum + sy.a_tail * row(sy.s2);
      return static_cast<uint8_t>(clamp_i(round_f(sum), 0, 255));
    }
    default: {
      const bool am = r.mode == kLinearAreaMode;
      const Tap ty = linear_tap(r.y, dy, am, false), tx = linear_tap(r.x, dx, am, true);
      const int h0 = source_pixel(s, ty.s0, tx.s0, c) * tx.w0 + source_pixel(s, ty.s0, tx.s1, c) * tx.w1;
      const int h1 = source_pixel(s, ty.s1, tx.s0, c) * tx.w0 + source_pixel(s, ty.s1, tx.s1, c) * tx.w1;
      return static_cast<uint8_t>((((ty.w0 * (h0 >> 4)) >> 16) + ((ty.w1 * (h1 >> 4)) >> 16) + 2) >> 2);
    }
  }
}

CTRAIN_HD float normalized(const Sample& s, const Normalize& n, int size, int oy, int ox, int c) {
  return static_cast<float>(resampled(s, size, oy, ox, c)) * n.scale[c] + n.shift[c];
}

}  // namespace ctrain::data::augment
