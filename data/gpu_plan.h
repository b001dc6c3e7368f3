#pragma once
// The host half of the GPU image pipeline, free of CUDA so that every build compiles and tests
// it: from a sample's plan (data/image_folder.h, the same planner as the CPU pipeline's) to the
// kernel's descriptor (data/augment.h) and the region of the stored image the decoder must
// produce for it.
#include "data/augment.h"
#include "data/image_folder.h"

namespace ctrain::data {

struct Region {
  int top = 0, left = 0, height = 0, width = 0;
};

// The kernel's descriptor for a sample of a height x width image planned as `p` under `t`;
// its pixel fields (pixels, pitch, region_*) are left for the decoder's output.
augment::Sample describe_sample(const SamplePlan& p, const ImageTransform& t, int height, int width);

// The smallest rectangle of the stored image that the sample's resize reads: the crop box for
// training, the centre crop's footprint for evaluation (so nvJPEG decodes only that).
Region region_read(const augment::Sample& s, int size);

// Points `s` at a decoded region: RGB rows `pitch` bytes apart holding `r` of the stored image.
void attach_pixels(augment::Sample* s, const Region& r, const uint8_t* pixels, int64_t pitch);

augment::Normalize normalize_of(const ImageTransform& t);

// The kernel's arithmetic on the host: out[3][size][size] float, as the CPU pipeline writes it.
void render_on_host(const augment::Sample& s, const augment::Normalize& n, int size, float* out);

}  // namespace ctrain::data
