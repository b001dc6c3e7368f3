#pragma once
// Private to data/: libnvjpeg loaded with dlopen (see nvjpeg_decoder.h for why). nvjpeg.h is
// included for its types and declarations only; every function is called through a pointer
// looked up in the loaded library.
#include <nvjpeg.h>

#include <string>

namespace ctrain::data::nvjpeg {

// The functions used, each with its exact type from nvjpeg.h. X = needed; O = optional (used
// when present: a libnvjpeg.so of an older CUDA may lack them).
#define CTRAIN_NVJPEG_FUNCTIONS(X, O)     \
  X(nvjpegCreateEx)                       \
  X(nvjpegDestroy)                        \
  O(nvjpegGetHardwareDecoderInfo)         \
  X(nvjpegJpegStateCreate)                \
  X(nvjpegJpegStateDestroy)               \
  X(nvjpegDecodeBatchedInitialize)        \
  O(nvjpegDecodeBatchedPreAllocate)       \
  X(nvjpegDecodeBatchedSupportedEx)       \
  X(nvjpegDecodeBatchedEx)                \
  X(nvjpegBufferPinnedCreate)             \
  X(nvjpegBufferPinnedDestroy)            \
  X(nvjpegBufferDeviceCreate)             \
  X(nvjpegBufferDeviceDestroy)            \
  X(nvjpegStateAttachPinnedBuffer)        \
  X(nvjpegStateAttachDeviceBuffer)        \
  X(nvjpegJpegStreamCreate)               \
  X(nvjpegJpegStreamDestroy)              \
  X(nvjpegJpegStreamParse)                \
  X(nvjpegJpegStreamParseHeader)          \
  X(nvjpegJpegStreamGetJpegEncoding)      \
  X(nvjpegJpegStreamGetFrameDimensions)   \
  X(nvjpegJpegStreamGetComponentsNum)     \
  X(nvjpegJpegStreamGetChromaSubsampling) \
  O(nvjpegJpegStreamGetSamplePrecision)   \
  X(nvjpegDecodeParamsCreate)             \
  X(nvjpegDecodeParamsDestroy)            \
  X(nvjpegDecodeParamsSetOutputFormat)    \
  X(nvjpegDecodeParamsSetROI)             \
  X(nvjpegDecodeParamsSetAllowCMYK)       \
  X(nvjpegDecoderCreate)                  \
  X(nvjpegDecoderDestroy)                 \
  X(nvjpegDecoderJpegSupported)           \
  X(nvjpegDecoderStateCreate)             \
  X(nvjpegDecodeJpegHost)                 \
  X(nvjpegDecodeJpegTransferToDevice)     \
  X(nvjpegDecodeJpegDevice)

// decltype of a declared function's address needs its declaration only, not its definition.
// Qualified (::) so the member of the same name does not change what the name means.
struct Api {
#define CTRAIN_NVJPEG_MEMBER(name) decltype(&::name) name = nullptr;
  CTRAIN_NVJPEG_FUNCTIONS(CTRAIN_NVJPEG_MEMBER, CTRAIN_NVJPEG_MEMBER)
#undef CTRAIN_NVJPEG_MEMBER
};

struct Library {
  void* handle = nullptr;  // never dlclose'd: decoders may outlive any owner of it
  std::string reason;      // "" when loaded with every needed function
  Api api;
};

// Where to look first for libnvjpeg (a file path); "" for the usual places only. Takes effect
// if called before the first library(); the programs pass $CTRAIN_NVJPEG_LIBRARY.
void set_library_path(const std::string& path);

// The library, loaded on first use (thread-safe) and never unloaded; reason is "" when it
// loaded with every needed function, else what was tried and why it failed.
const Library& library();

// nvJPEG's status as its enum name ("NVJPEG_STATUS_BAD_JPEG"), or its number if newer.
std::string status_text(nvjpegStatus_t s);

// Setup and bookkeeping calls: any failure is the library's or the machine's, not an image's.
// Throws ctrain::Error naming `call` and the status.
void check(nvjpegStatus_t s, const char* call);

}  // namespace ctrain::data::nvjpeg
