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

// Decodes the formats an image folder holds (JPEG, PNG, BMP, PBM/PGM/PPM, TIFF, WebP: those of
// torchvision's IMG_EXTENSIONS, told by their first bytes); grayscale and RGBA become RGB.
// Throws ctrain::Error naming the path for unreadable, corrupt, truncated or other files.
Image decode_image(const std::string& path);

// Decodes encoded bytes (`path` is for messages), ignoring EXIF orientation; a truncated JPEG
// or PNG (image_truncation) is an error naming `path`. For JPEG, `reduce` in {2, 4, 8} decodes at
// 1/reduce scale with libjpeg's DCT scaling, several times faster than a full decode: the
// result is ceil(height/reduce) x ceil(width/reduce).
Image decode_bytes(const std::string& bytes, const std::string& path, int reduce = 1);

// A rectangle of a decoded image: its rows [top, top + img.height) and columns
// [left, left + img.width), in the pixels of the (scaled) image.
struct ImageRegion {
  Image img;
  int top = 0, left = 0;
};

// Decodes only the part of a JPEG that a crop needs, at 1/reduce scale (reduce in {1, 2, 4, 8};
// the scaled image is ceil(h/reduce) x ceil(w/reduce)), into `out`, whose buffer is reused.
// Rows above the rectangle are skipped without their IDCT, rows below it are not decoded, and
// columns outside it are cropped. `out` covers the rectangle and a few pixels more on each
// side (libjpeg-turbo also widens a crop to whole iMCU columns): its top, left and size say
// where it lies. Inside the rectangle the pixels equal those of a whole decode at the same
// scale, RGB, EXIF orientation ignored. Returns false, leaving `out` alone,
// where this build or this file needs the whole-image decoder instead (no libjpeg-turbo; CMYK
// JPEGs). Throws ctrain::Error naming `path` for a corrupt file or a rectangle outside it.
bool decode_jpeg_region(const std::string& bytes, const std::string& path, int reduce, int top,
                        int left, int height, int width, ImageRegion* out);

// Size of a JPEG from its header (SOF marker) without decoding; false if not a JPEG or the
// header cannot be parsed. The size is the stored one: EXIF orientation is not applied (nor
// is it by the decoder above, as PIL does not apply it).
bool jpeg_size(const std::string& bytes, int* height, int* width);

// Size of a PNG from its IHDR chunk; false if not a PNG or too short.
bool png_size(const std::string& bytes, int* height, int* width);

// Size of a JPEG, PNG, BMP or PBM/PGM/PPM from its header, read as the decoder reads it, without
// decoding: what --max-image-pixels judges before a decoder allocates. False for other formats
// (TIFF, WebP: judged after decoding) and for a header the decoder refuses before allocating.
bool image_header_size(const std::string& bytes, int* height, int* width);

// Empty when `bytes` hold a whole JPEG (its marker segments and entropy-coded scans run to the
// EOI marker) or a whole PNG (its chunks run to IEND), or are not a JPEG or PNG with a readable
// header (jpeg_size, png_size: the decoder then says what is wrong); else what is missing.
// Decoders pad a cut-off file with grey and call that a warning (libjpeg's "Premature end of
// JPEG file"); PIL refuses it ("image file is truncated"), and so do the decoders here.
// O(size), no allocation: the bytes between 0xFF markers are skipped with memchr.
std::string image_truncation(const std::string& bytes);

// Makes the backend run on the calling thread only: the loader's worker threads are the
// parallelism, and a library thread pool underneath them would oversubscribe the cores.
void use_single_threaded_backend();

// Bilinear resize to (height, width), antialiased when shrinking (area averaging), as
// torchvision's PIL-based Resize is.
Image resize_image(const Image& src, int height, int width);
// The same for the rectangle of `src` at (top, left) of height x width, read in place (no
// crop copy), into `out` (its buffer is reused).
void resize_rect(const Image& src, int top, int left, int height, int width, int out_height,
                 int out_width, Image* out);

}  // namespace ctrain::data
