#include <cctype>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "data/decode.h"

namespace ctrain::data {

namespace {

// OpenCV's imdecode takes the first decoder in its list whose signature matches, and its list
// reaches far past what an image folder holds: DICOM (GDCM, which aborts the process on some
// inputs: fuzz_decode found one), JPEG 2000, OpenEXR, GDAL, HDR, Sun raster, PFM, PAM. Only the
// formats ImageFolder lists (torchvision's IMG_EXTENSIONS) go to it, each recognised by the
// same leading bytes OpenCV's decoder for it claims, so that decoder is the one chosen. A
// WebP header that libwebp cannot read is the one claim that can fail and fall through to the
// decoders that look further in (DICOM's "DICM" at byte 128, GDAL's "DTED" at 140): refused.
bool opencv_may_decode(const std::string& b) {
  const auto at = [&](size_t i, const char* sig, size_t n) { return b.size() >= i + n && b.compare(i, n, sig, n) == 0; };
  if (at(0, "\xFF\xD8\xFF", 3) || at(0, "\x89PNG\r\n\x1a\n", 8) || at(0, "BM", 2) || at(0, "II*\0", 4) ||
      at(0, "MM\0*", 4)) {
    return true;  // JPEG, PNG, BMP, TIFF
  }
  if (b.size() >= 3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6' && std::isspace(static_cast<unsigned char>(b[2]))) {
    return true;  // PBM, PGM, PPM (PxMDecoder::checkSignature)
  }
  return at(0, "RIFF", 4) && at(8, "WEBP", 4) && !at(128, "DICM", 4) && !at(140, "DTED", 4);
}

}  // namespace

Image decode_image(const std::string& path) {
  // Read the bytes ourselves: cv::imread cannot tell "missing" from "corrupt".
  return decode_bytes(read_file(path), path, 1);
}

void use_single_threaded_backend() { cv::setNumThreads(1); }

Image decode_bytes(const std::string& bytes, const std::string& path, int reduce) {
  // OpenCV decodes a cut-off JPEG with a warning and grey rows in place of the missing data.
  if (const std::string cut = image_truncation(bytes); !cut.empty()) {
    throw Error(path + ": truncated image: " + cut, "use --skip-bad-images to skip it");
  }
  if (!opencv_may_decode(bytes)) {
    throw Error(path + ": not a JPEG, PNG, BMP, PPM/PGM, TIFF or WebP image (by its first bytes)",
                "use --skip-bad-images to skip it");
  }
  cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
  // IGNORE_ORIENTATION: torchvision's PIL path ignores EXIF orientation, and the loader plans
  // its crop from the header's (unrotated) size; a rotated decode would not fit that plan.
  const int flag = (reduce == 8   ? cv::IMREAD_REDUCED_COLOR_8
                    : reduce == 4 ? cv::IMREAD_REDUCED_COLOR_4
                    : reduce == 2 ? cv::IMREAD_REDUCED_COLOR_2
                                  : cv::IMREAD_COLOR) |  // grayscale and alpha become 3-channel BGR
                   cv::IMREAD_IGNORE_ORIENTATION;
  cv::Mat bgr;
  try {
    bgr = cv::imdecode(raw, flag);
  } catch (const std::exception& e) {  // cv::Exception, and std::bad_alloc on a huge image
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
  resize_rect(src, 0, 0, src.height, src.width, height, width, &out);
  return out;
}

void resize_rect(const Image& src, int top, int left, int height, int width, int out_height,
                 int out_width, Image* out) {
  out->height = out_height;
  out->width = out_width;
  out->rgb.resize(static_cast<size_t>(out_height) * out_width * 3);
  // A view of the rectangle: cv::resize reads only inside it, as if it were the whole image.
  const cv::Mat in = cv::Mat(src.height, src.width, CV_8UC3, const_cast<uint8_t*>(src.rgb.data()))(
      cv::Rect(left, top, width, height));
  cv::Mat dst(out_height, out_width, CV_8UC3, out->rgb.data());
  const bool shrink = out_height < height || out_width < width;
  cv::resize(in, dst, cv::Size(out_width, out_height), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
}

}  // namespace ctrain::data
