#pragma once
// Image decoding behind a small, library-free interface: the implementation (OpenCV here)
// can be swapped for a lighter one (libjpeg-turbo alone) where OpenCV's imgcodecs, which
// drags GDAL, cannot be carried.
#include <cstdint>
#include <string>
#include <vector>

namespace ctrain::data {

// 8-bit RGB, row-major HWC.
struct Image {
  int height = 0, width = 0;
  std::vector<uint8_t> rgb;
};

// Decodes JPEG, PNG and whatever else the backend reads; grayscale and RGBA become RGB.
// Throws ctrain::Error naming the path for unreadable, corrupt or truncated files.
Image decode_image(const std::string& path);

// Decodes encoded bytes (`path` is for messages), ignoring EXIF orientation. For JPEG, `reduce` in {2, 4, 8} decodes at
// 1/reduce scale with libjpeg's DCT scaling, several times faster than a full decode: the
// result is ceil(height/reduce) x ceil(width/reduce).
Image decode_bytes(const std::string& bytes, const std::string& path, int reduce = 1);

// Size of a JPEG from its header (SOF marker) without decoding; false if not a JPEG or the
// header cannot be parsed. The size is the stored one: EXIF orientation is not applied (nor
// is it by the decoder above, as PIL does not apply it).
bool jpeg_size(const std::string& bytes, int* height, int* width);

// Size of a PNG from its IHDR chunk; false if not a PNG or too short.
bool png_size(const std::string& bytes, int* height, int* width);

// Makes the backend run on the calling thread only: the loader's worker threads are the
// parallelism, and a library thread pool underneath them would oversubscribe the cores.
void use_single_threaded_backend();

// Bilinear resize to (height, width), antialiased when shrinking (area averaging), as
// torchvision's PIL-based Resize is.
Image resize_image(const Image& src, int height, int width);

}  // namespace ctrain::data
