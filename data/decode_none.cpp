// The decoder where no image library is built in (CTRAIN_WITH_OPENCV=OFF, e.g. a GPU node
// without C++ OpenCV): the image pipeline compiles, and reading an image is an error that says
// why. IDX data (ctrain-mnist) needs no decoder.
#include "core/error.h"
#include "data/decode.h"

namespace ctrain::data {
namespace {

[[noreturn]] void no_decoder(const std::string& path) {
  throw Error(path + ": this ctrain was built without an image decoder (OpenCV)",
              "rebuild with OpenCV (libopencv-dev; -DCTRAIN_WITH_OPENCV=ON) to read image folders");
}

}  // namespace

Image decode_image(const std::string& path) { no_decoder(path); }
Image decode_bytes(const std::string&, const std::string& path, int) { no_decoder(path); }
void use_single_threaded_backend() {}
Image resize_image(const Image&, int, int) { no_decoder("resize"); }
void resize_rect(const Image&, int, int, int, int, int, int, Image*) { no_decoder("resize"); }

}  // namespace ctrain::data
