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

// Bilinear resize to (height, width), antialiased when shrinking (area averaging), as
// torchvision's PIL-based Resize is.
Image resize_image(const Image& src, int height, int width);

}  // namespace ctrain::data
