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

}  // namespace ctrain::testing
