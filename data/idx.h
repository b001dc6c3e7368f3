#pragma once
// IDX files (the MNIST / Fashion-MNIST format), raw or gzipped.
#include <torch/torch.h>

#include <string>
#include <vector>

namespace ctrain::data {

// An IDX array of unsigned bytes (type code 0x08), the only type MNIST uses.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;  // row-major, prod(dims) elements
};

// Reads one IDX file, gzipped or raw (detected from the content, not the name). Validates the
// magic, the element type, the rank (`expected_ndim`), the dimensions and the payload size;
// throws ctrain::Error naming `path` and what is wrong (truncated, trailing bytes, ...).
IdxArray read_idx(const std::string& path, int expected_ndim);

struct MnistSplit {
  torch::Tensor images;  // [N, rows*cols] float32 in [0,1] (pixels / 255, no mean/std)
  torch::Tensor labels;  // [N] int64 in [0, kMnistClasses)
};

struct MnistData {
  MnistSplit train;
  MnistSplit test;
  int64_t rows = 0, cols = 0;
};

constexpr int64_t kMnistClasses = 10;

// Finds the four MNIST files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
// t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; each raw or .gz, '-idx' or '.idx' spelling) in
// `folder` or one level of its subfolders, and loads them. Image/label counts must agree,
// train and test images must have the same size and every label must be < kMnistClasses.
MnistData load_mnist(const std::string& folder);

}  // namespace ctrain::data
