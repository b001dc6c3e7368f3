// JPEG regions with libjpeg-turbo's own API: OpenCV's imdecode can scale a JPEG but always
// decodes all of it, while a RandomResizedCrop keeps on average about half of the image.
// jpeg_skip_scanlines() skips the rows above the crop without their IDCT, decoding stops
// after the crop's last row, and jpeg_crop_scanline() limits the IDCT, upsampling and colour
// conversion to the crop's iMCU columns. It also decodes straight to RGB (OpenCV's BGR needs
// a conversion pass).
#include <algorithm>
#include <csetjmp>
#include <cstddef>
#include <cstdio>  // before jpeglib.h, which uses FILE and size_t

#include <jpeglib.h>
#include <jerror.h>

#include "core/error.h"
#include "data/decode.h"

namespace ctrain::data {
namespace {

// libjpeg reports a fatal error by calling error_exit, which must not return: it jumps back
// to decode_jpeg_region's setjmp, which frees the decoder and throws. Nothing with a
// destructor lives in the frames the jump crosses (they are libjpeg's C frames).
struct ErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void on_error(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

// Warnings (data recovered from a damaged file) are not printed per image; OpenCV's decoder,
// which this replaces for JPEGs, accepts such files too.
void on_message(j_common_ptr) {}

// Except "Premature end of JPEG file" (JWRN_JPEG_EOF): the decoder would pad the missing rows
// with grey; it is an error, as PIL's "image file is truncated" is.
void on_emit(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) on_error(cinfo);
}

}  // namespace

bool decode_jpeg_region(const std::string& bytes, const std::string& path, int reduce, int top,
                        int left, int height, int width, ImageRegion* out) {
  ErrorManager err;                // declared first: it outlives the decoder's teardown
  jpeg_decompress_struct cinfo{};  // zeroed: destroying it before jpeg_create is a no-op
  // Frees the decoder on every exit: a return, a throw, and the longjmp's throw below (the
  // guard lives in this frame, which the jump does not leave). Destroying twice is a no-op.
  struct Destroy {
    jpeg_decompress_struct* c;
    ~Destroy() { jpeg_destroy_decompress(c); }
  } destroy{&cinfo};
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.output_message = on_message;
  err.pub.emit_message = on_emit;
  if (setjmp(err.jump)) {
    throw Error(path + ": cannot decode JPEG (" + err.message + ")", "use --skip-bad-images to skip it");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  // A region above the cut would decode cleanly: the check is on the whole file. (After the
  // header, so that what is no JPEG at all gets libjpeg's own message.)
  if (const std::string cut = image_truncation(bytes); !cut.empty()) {
    throw Error(path + ": truncated image: " + cut, "use --skip-bad-images to skip it");
  }
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    return false;  // libjpeg has no CMYK -> RGB; OpenCV converts them
  }
  cinfo.out_color_space = JCS_RGB;
  cinfo.scale_num = 1;
  cinfo.scale_denom = static_cast<unsigned int>(reduce);
  jpeg_start_decompress(&cinfo);
  const int scaled_h = static_cast<int>(cinfo.output_height), scaled_w = static_cast<int>(cinfo.output_width);
  if (top < 0 || left < 0 || height < 1 || width < 1 || top + height > scaled_h || left + width > scaled_w) {
    throw Error(path + ": the crop " + std::to_string(height) + "x" + std::to_string(width) + " at (" +
                    std::to_string(top) + ", " + std::to_string(left) + ") lies outside the " +
                    std::to_string(scaled_h) + "x" + std::to_string(scaled_w) + " pixels decoded" +
                    (reduce > 1 ? " at 1/" + std::to_string(reduce) + " scale" : std::string()),
                "use --skip-bad-images to skip it");
  }
  // At a crop's edges, chroma upsampling has no neighbour to blend with and replicates the
  // edge sample, so the outermost decoded pixels differ from a whole decode's. A margin around
  // the rectangle keeps those pixels out of it (the image's own edges are edges either way).
  constexpr int kMargin = 8;
  const int y0 = std::max(0, top - kMargin), y1 = std::min(scaled_h, top + height + kMargin);
  JDIMENSION x = static_cast<JDIMENSION>(std::max(0, left - kMargin));
  JDIMENSION w = static_cast<JDIMENSION>(std::min(scaled_w, left + width + kMargin)) - x;
  if (w < cinfo.output_width) jpeg_crop_scanline(&cinfo, &x, &w);  // widens to iMCU columns
  if (y0 > 0) jpeg_skip_scanlines(&cinfo, static_cast<JDIMENSION>(y0));
  out->top = y0;
  out->left = static_cast<int>(x);
  out->img.height = y1 - y0;
  out->img.width = static_cast<int>(w);
  const size_t stride = static_cast<size_t>(w) * 3;
  out->img.rgb.resize(stride * static_cast<size_t>(out->img.height));
  for (int y = 0; y < out->img.height; ++y) {
    JSAMPROW row = out->img.rgb.data() + stride * static_cast<size_t>(y);
    if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) {  // only a suspending source returns 0
      throw Error(path + ": the JPEG decoder returned no row " + std::to_string(y0 + y),
                  "use --skip-bad-images to skip it");
    }
  }
  return true;  // the rows below the region are never decoded: `destroy` abandons them
}

}  // namespace ctrain::data
