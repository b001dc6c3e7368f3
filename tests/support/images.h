#pragma once
// Real image files for tests, written with OpenCV: class folders whose images differ visibly
// (class c has a dominant colour), in assorted sizes, as JPEG and PNG.
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace ctrain::testing {

// root/<class>/<i>.jpg (every third one .png), `per_class` images per class.
inline void write_image_folder(const std::string& root, const std::vector<std::string>& classes,
                               int per_class, uint32_t seed) {
  static const cv::Scalar kColours[] = {{40, 60, 200}, {200, 70, 40}, {60, 190, 60}};  // BGR
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> side(48, 120), noise(0, 70);
  for (size_t c = 0; c < classes.size(); ++c) {
    std::filesystem::create_directories(root + "/" + classes[c]);
    for (int i = 0; i < per_class; ++i) {
      cv::Mat img(side(rng), side(rng), CV_8UC3, kColours[c % 3]);
      for (int y = 0; y < img.rows; ++y) {
        for (int x = 0; x < img.cols; ++x) {
          auto& px = img.at<cv::Vec3b>(y, x);
          for (int k = 0; k < 3; ++k) px[k] = cv::saturate_cast<uchar>(px[k] + noise(rng) - 35);
        }
      }
      const std::string ext = i % 3 == 2 ? ".png" : ".jpg";
      cv::imwrite(root + "/" + classes[c] + "/" + std::to_string(i) + ext, img);
    }
  }
}

// `jpeg` with an EXIF APP1 segment carrying orientation tag 0x0112 = `orientation` (1-8)
// inserted after SOI, as cameras and Pillow's save(exif=...) write it: a big-endian TIFF
// header and one IFD with one SHORT entry.
inline std::string with_exif_orientation(const std::string& jpeg, int orientation) {
  const unsigned char tiff[] = {'M', 'M', 0, 42, 0, 0, 0, 8,   // header, IFD at offset 8
                                0, 1,                          // one entry
                                0x01, 0x12, 0, 3, 0, 0, 0, 1,  // Orientation, SHORT, count 1
                                0, static_cast<unsigned char>(orientation), 0, 0,
                                0, 0, 0, 0};                   // no next IFD
  std::string payload = std::string("Exif\0\0", 6) + std::string(reinterpret_cast<const char*>(tiff), sizeof(tiff));
  const size_t len = payload.size() + 2;
  std::string seg = {'\xff', '\xe1', static_cast<char>(len >> 8), static_cast<char>(len & 0xff)};
  return jpeg.substr(0, 2) + seg + payload + jpeg.substr(2);
}

}  // namespace ctrain::testing
