// Image header parsing (JPEG, PNG, BMP, PBM/PGM/PPM), kept apart from the decoder: it reads
// untrusted bytes with no library underneath (fuzzed in fuzz/), and a decoder swap must not
// touch it. OpenCV 4.6 has no call that reads a header without decoding, and the sizes here
// are what --max-image-pixels judges before a decoder allocates, so each is read as the
// decoder reads it.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "data/decode.h"

namespace ctrain::data {

bool jpeg_size(const std::string& b, int* height, int* width) {
  // The size the decoder will allocate for, so the walk reads markers as libjpeg does
  // (jdmarker.c: first_marker, next_marker, read_markers); a walk that parts from it lets a
  // frame past --max-image-pixels (fuzz_decode found two such files). After SOI: bytes other
  // than FF are skipped, FF fill bytes are skipped, FF 00 is skipped as garbage; RSTn and TEM
  // carry no length; APPn, COM and DNL whose length is below 2 skip nothing past it; the first
  // SOFn (C0-CF except DHT C4, JPG C8, DAC CC) gives the size. Where libjpeg stops with an
  // error before any SOF (SOI again, SOS, EOI, an unknown marker, a table whose length is
  // below 2, the end of the bytes), this returns false: no decoder allocates a frame there.
  // fuzz_jpeg_header checks this walk against libjpeg's jpeg_read_header.
  const auto* p = reinterpret_cast<const unsigned char*>(b.data());
  const size_t n = b.size();
  if (n < 2 || p[0] != 0xFF || p[1] != 0xD8) return false;
  size_t i = 2;
  for (;;) {
    while (i < n && p[i] != 0xFF) ++i;  // extraneous bytes: libjpeg warns and skips them
    while (i < n && p[i] == 0xFF) ++i;  // fill bytes
    if (i >= n) return false;
    const unsigned char m = p[i++];
    if (m == 0x00) continue;                               // FF 00 outside a scan: garbage
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // TEM, RSTn: no parameters
    if (i + 2 > n) return false;
    const size_t len = (size_t{p[i]} << 8) | p[i + 1];
    if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
      // Length (2), precision (1), height (2), width (2).
      if (i + 7 > n) return false;
      *height = (p[i + 3] << 8) | p[i + 4];
      *width = (p[i + 5] << 8) | p[i + 6];
      return *height > 0 && *width > 0;
    }
    const bool skipped = (m >= 0xE0 && m <= 0xEF) || m == 0xFE || m == 0xDC;  // APPn, COM, DNL
    const bool table = m == 0xC4 || m == 0xCC || m == 0xDB || m == 0xDD;       // DHT, DAC, DQT, DRI
    if (!skipped && !table) return false;  // SOI, EOI, SOS, JPG, or unknown: libjpeg stops
    if (len < 2) {
      if (table) return false;  // "Bogus marker length"
      i += 2;                   // the length word alone
      continue;
    }
    if (i + len > n) return false;
    i += len;
  }
}

bool png_size(const std::string& b, int* height, int* width) {
  // 8-byte signature, then the IHDR chunk: length (4), "IHDR", width (4), height (4), big-endian.
  static const char kSig[] = "\x89PNG\r\n\x1a\n";
  if (b.size() < 24 || b.compare(0, 8, kSig, 8) != 0 || b.compare(12, 4, "IHDR") != 0) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(b.data());
  auto be32 = [&](size_t i) {
    return (uint32_t{p[i]} << 24) | (uint32_t{p[i + 1]} << 16) | (uint32_t{p[i + 2]} << 8) | p[i + 3];
  };
  const uint32_t w = be32(16), h = be32(20);
  if (w == 0 || h == 0 || w > 0x7fffffffu || h > 0x7fffffffu) return false;
  *width = static_cast<int>(w);
  *height = static_cast<int>(h);
  return true;
}

namespace {

uint32_t le32(const unsigned char* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

// A BMP's size as OpenCV's BmpDecoder::readHeader reads it: the info header's size at byte 14,
// then 32-bit width and height (negative height: top-down rows) for headers of 36 bytes or
// more, 16-bit ones for the 12-byte OS/2 header; any other header is refused before a frame.
bool bmp_size(const std::string& b, int* height, int* width) {
  const auto* p = reinterpret_cast<const unsigned char*>(b.data());
  if (b.size() < 26 || p[0] != 'B' || p[1] != 'M') return false;
  const uint32_t header = le32(p + 14);
  int64_t w = 0, h = 0;
  if (header >= 36 && header <= 0x7fffffffu) {
    w = static_cast<int32_t>(le32(p + 18));
    h = static_cast<int32_t>(le32(p + 22));
  } else if (header == 12) {
    w = p[18] | (p[19] << 8);
    h = p[20] | (p[21] << 8);
  } else {
    return false;
  }
  if (h < 0) h = -h;
  if (w <= 0 || h <= 0 || h > 0x7fffffff) return false;  // OpenCV refuses these before allocating
  *width = static_cast<int>(w);
  *height = static_cast<int>(h);
  return true;
}

// A PBM/PGM/PPM's size as OpenCV's PxMDecoder reads it: "P1".."P6", then two decimal numbers,
// each after any whitespace and '#' comments (to the end of the line).
bool pnm_size(const std::string& b, int* height, int* width) {
  if (b.size() < 3 || b[0] != 'P' || b[1] < '1' || b[1] > '6') return false;
  size_t i = 2;
  auto number = [&](int64_t* v) {
    for (;;) {  // OpenCV's ReadNumber: anything else before the digits is an error
      if (i >= b.size()) return false;
      const auto c = static_cast<unsigned char>(b[i]);
      if (std::isdigit(c)) break;
      if (c == '#') {
        while (i < b.size() && b[i] != '\n' && b[i] != '\r') ++i;
        ++i;
      } else if (std::isspace(c)) {
        ++i;
      } else {
        return false;
      }
    }
    *v = 0;
    while (i < b.size() && std::isdigit(static_cast<unsigned char>(b[i]))) {
      *v = *v * 10 + (b[i++] - '0');
      if (*v > 0x7fffffff) return false;
    }
    return true;
  };
  int64_t w = 0, h = 0;
  if (!number(&w) || !number(&h) || w <= 0 || h <= 0) return false;
  *width = static_cast<int>(w);
  *height = static_cast<int>(h);
  return true;
}

std::string jpeg_truncation(const unsigned char* p, size_t n) {
  // From SOI on: a segment (FF, marker, 2-byte length counting itself) is skipped whole; the
  // bytes between segments are entropy-coded data after an SOS (where a data 0xFF is stuffed as
  // FF 00 and FF D0-D7 are restart markers) or garbage that libjpeg skips too. EOI ends it.
  size_t i = 2;
  while (i < n) {
    if (p[i] != 0xFF) {
      const void* ff = std::memchr(p + i, 0xFF, n - i);
      if (ff == nullptr) break;
      i = static_cast<size_t>(static_cast<const unsigned char*>(ff) - p);
      continue;
    }
    if (i + 1 >= n) break;
    const unsigned char m = p[i + 1];
    if (m == 0xD9) return "";  // EOI
    if (m == 0xFF) {           // fill byte
      ++i;
      continue;
    }
    if (m == 0x00 || m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) {  // stuffing, TEM, SOI, RSTn: no length
      i += 2;
      continue;
    }
    if (i + 4 > n) break;
    const size_t len = (size_t{p[i + 2]} << 8) | p[i + 3];
    if (i + 2 + len > n) break;
    i += 2 + len;
  }
  return "the file ends before the JPEG's end-of-image marker (" + std::to_string(n) + " bytes)";
}

std::string png_truncation(const unsigned char* p, size_t n) {
  // After the 8-byte signature, chunks: length (4, big-endian), type (4), data, CRC (4).
  size_t i = 8;
  while (i + 8 <= n) {
    const uint32_t len = (uint32_t{p[i]} << 24) | (uint32_t{p[i + 1]} << 16) | (uint32_t{p[i + 2]} << 8) | p[i + 3];
    if (len > 0x7fffffffu) return "";  // corrupt, not short: the decoder says so
    if (i + 12 + len > n) break;
    if (std::memcmp(p + i + 4, "IEND", 4) == 0) return "";
    i += 12 + len;
  }
  return "the file ends before the PNG's IEND chunk (" + std::to_string(n) + " bytes)";
}

}  // namespace

bool image_header_size(const std::string& b, int* height, int* width) {
  return jpeg_size(b, height, width) || png_size(b, height, width) || bmp_size(b, height, width) ||
         pnm_size(b, height, width);
}

std::string image_truncation(const std::string& b) {
  const auto* p = reinterpret_cast<const unsigned char*>(b.data());
  int h = 0, w = 0;
  if (jpeg_size(b, &h, &w)) return jpeg_truncation(p, b.size());
  if (png_size(b, &h, &w)) return png_truncation(p, b.size());
  return "";
}

}  // namespace ctrain::data
