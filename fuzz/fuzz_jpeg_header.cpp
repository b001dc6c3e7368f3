// The image header readers (JPEG, PNG, BMP, PNM) on untrusted bytes: their sizes are what
// --max-image-pixels judges before a decoder allocates. Where libjpeg is linked, the JPEG walk
// is checked against libjpeg's own header reader: wherever jpeg_read_header reaches a frame,
// the walk must find that frame's size (a walk that parts from libjpeg lets a frame past the
// limit).
#include <cstdint>
#include <string>

#include "data/decode.h"

#ifdef CTRAIN_FUZZ_WITH_LIBJPEG
#include <csetjmp>
#include <cstdio>  // before jpeglib.h

#include <jpeglib.h>

namespace {

struct Jump {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
};

[[noreturn]] void on_error(j_common_ptr cinfo) { std::longjmp(reinterpret_cast<Jump*>(cinfo->err)->jump, 1); }
void on_message(j_common_ptr) {}

// libjpeg's frame size, as OpenCV's decoder and decode_jpeg_region read it; false where
// jpeg_read_header fails.
bool libjpeg_size(const uint8_t* data, size_t size, int* height, int* width) {
  Jump err;
  jpeg_decompress_struct cinfo{};
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.output_message = on_message;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  *height = static_cast<int>(cinfo.image_height);
  *width = static_cast<int>(cinfo.image_width);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

}  // namespace
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int h = 0, w = 0;
  const bool found = ctrain::data::jpeg_size(std::string(reinterpret_cast<const char*>(data), size), &h, &w);
  if (found && (h <= 0 || w <= 0)) __builtin_trap();
  int ih = 0, iw = 0;  // and the other header readers (PNG, BMP, PNM) on the same bytes
  if (ctrain::data::image_header_size(std::string(reinterpret_cast<const char*>(data), size), &ih, &iw) &&
      (ih <= 0 || iw <= 0)) {
    __builtin_trap();
  }
#ifdef CTRAIN_FUZZ_WITH_LIBJPEG
  int lh = 0, lw = 0;
  if (libjpeg_size(data, size, &lh, &lw)) {
    if (!found) {
      std::fprintf(stderr, "libjpeg reads a %dx%d frame where the walk finds none\n", lw, lh);
      __builtin_trap();
    }
    if (lh != h || lw != w) {
      std::fprintf(stderr, "libjpeg reads a %dx%d frame, the walk %dx%d\n", lw, lh, w, h);
      __builtin_trap();
    }
  }
#endif
  return 0;
}
