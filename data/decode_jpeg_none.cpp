// Where libjpeg-turbo (with jpeg_crop_scanline, 1.5 and later) is not found: JPEGs go through
// the whole-image decoder (decode_bytes) instead of being decoded by region.
#include "data/decode.h"

namespace ctrain::data {

bool decode_jpeg_region(const std::string&, const std::string&, int, int, int, int, int, ImageRegion*) {
  return false;
}

}  // namespace ctrain::data
