#include <opencv2/imgcodecs.hpp>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "data/decode.h"

namespace ctrain::data {

Image decode_image(const std::string& path) {
  // Read the bytes ourselves: cv::imread cannot tell "missing" from "corrupt".
  return decode_bytes(read_file(path), path, 1);
}

void use_single_threaded_backend() { cv::setNumThreads(1); }

bool jpeg_size(const std::string& b, int* height, int* width) {
  // Walk the marker segments after SOI (FF D8) to the first SOFn (C0-CF except C4, C8, CC),
  // whose payload is: precision (1), height (2), width (2). Every length is bounds-checked.
  const auto* p = reinterpret_cast<const unsigned char*>(b.data());
  const size_t n = b.size();
  if (n < 4 || p[0] != 0xFF || p[1] != 0xD8) return false;
  size_t i = 2;
  while (i + 4 <= n) {
    if (p[i] != 0xFF) return false;
    const unsigned char m = p[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    const size_t len = (size_t{p[i + 2]} << 8) | p[i + 3];
    if (len < 2 || i + 2 + len > n) return false;
    if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
      if (len < 7) return false;
      *height = (p[i + 5] << 8) | p[i + 6];
      *width = (p[i + 7] << 8) | p[i + 8];
      return *height > 0 && *width > 0;
    }
    i += 2 + len;
  }
  return false;
}

Image decode_bytes(const std::string& bytes, const std::string& path, int reduce) {
  cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
  const int flag = reduce == 8   ? cv::IMREAD_REDUCED_COLOR_8
                   : reduce == 4 ? cv::IMREAD_REDUCED_COLOR_4
                   : reduce == 2 ? cv::IMREAD_REDUCED_COLOR_2
                                 : cv::IMREAD_COLOR;  // grayscale and alpha become 3-channel BGR
  cv::Mat bgr;
  try {
    bgr = cv::imdecode(raw, flag);
  } catch (const cv::Exception& e) {
    throw Error(path + ": cannot decode image (" + e.what() + ")", "use --skip-bad-images to skip it");
  }
  if (bgr.empty()) {
    throw Error(path + ": not a readable image (corrupt, truncated or unsupported format)",
                "use --skip-bad-images to skip it");
  }
  Image img;
  img.height = bgr.rows;
  img.width = bgr.cols;
  img.rgb.resize(static_cast<size_t>(img.height) * img.width * 3);
  cv::Mat rgb(img.height, img.width, CV_8UC3, img.rgb.data());
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return img;
}

Image resize_image(const Image& src, int height, int width) {
  Image out;
  out.height = height;
  out.width = width;
  out.rgb.resize(static_cast<size_t>(height) * width * 3);
  cv::Mat in(src.height, src.width, CV_8UC3, const_cast<uint8_t*>(src.rgb.data()));
  cv::Mat dst(height, width, CV_8UC3, out.rgb.data());
  const bool shrink = height < src.height || width < src.width;
  cv::resize(in, dst, cv::Size(width, height), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
  return out;
}

}  // namespace ctrain::data
