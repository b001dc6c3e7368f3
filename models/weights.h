#pragma once
// Moving weights into a model by name: safetensors files (the format timm/Hugging Face ship,
// with torchvision/timm names) and any name -> tensor map.
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace ctrain::models {

// Reads a .safetensors file (8-byte little-endian header size, JSON header, raw data). Sizes
// and offsets in the header are checked against the file before anything is read, never
// trusted. Supports F32, F16, BF16, F64, I64, I32, U8. Throws ctrain::Error naming the path.
std::map<std::string, torch::Tensor> read_safetensors(const std::string& path);

struct ImportReport {
  std::vector<std::string> loaded;
  std::vector<std::string> skipped;  // present in both, left as initialised (e.g. a new head)
};

// Copies `tensors` into `module`'s parameters and buffers by dotted name (converting dtype).
// Tensors whose name starts with one of `reinit_prefixes` are skipped, keeping the module's
// own initialisation (a classifier head with another class count). Any other missing,
// unexpected or mis-shaped name is an error listing every one of them, mentioning `source`.
ImportReport import_weights(torch::nn::Module& module,
                            const std::map<std::string, torch::Tensor>& tensors,
                            const std::vector<std::string>& reinit_prefixes,
                            const std::string& source);

}  // namespace ctrain::models
