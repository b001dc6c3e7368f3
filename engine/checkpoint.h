#pragma once
// Checkpoints and final models: one checksummed file format for both.
//
// Layout: "CTRAINCK" magic, u32 format version, u64 payload size, u32 CRC-32 of the payload,
// then the payload, a LibTorch OutputArchive (zip) holding the model, the optimizer state,
// the epoch, the CPU RNG state, JSON strings for the run config and the model spec, and an fp16
// run's loss scale.
// The size and CRC make a truncated or bit-flipped file detectable before LibTorch parses it.
#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ctrain::engine {

// An fp16 run's loss scale (engine/amp.h's GradScaler) where it stood at the save, so a resumed
// run continues at the same scale rather than at 65536 with its growth count reset.
struct LossScale {
  double scale = 0.0;
  int64_t growth_tracker = 0;  // consecutive good steps since the scale last changed
};

struct CheckpointMeta {
  int64_t epoch = -1;          // last completed epoch (0-based); -1 = none
  double best_val_acc = 0.0;
  int64_t best_epoch = -1;
  nlohmann::json config;       // the run's TrainConfig (and app options)
  nlohmann::json spec;         // what model this is: {"arch": "mlp", ...}, for loaders/exporters
  std::optional<LossScale> loss_scale;  // --amp fp16 runs only; files before it have none
};

// Writes atomically (core/fs.h): `path` is either the previous file or the complete new one.
// `optimizer` may be null (final model files).
void checkpoint_save(const std::string& path, torch::nn::Module& module,
                     torch::optim::Optimizer* optimizer, const CheckpointMeta& meta);

// Verifies magic, size and CRC, then loads into `module` (and `optimizer` if given, restoring
// the CPU RNG state too). Throws ctrain::Error naming `path` for any corruption or mismatch.
CheckpointMeta checkpoint_load(const std::string& path, torch::nn::Module& module,
                               torch::optim::Optimizer* optimizer);

// Reads only the metadata (still verifying the checksum).
CheckpointMeta checkpoint_peek(const std::string& path);

// The model tensors of a checkpoint by dotted name (conv1.weight, layer1.0.bn1.running_mean),
// for importing them into another model (models::import_weights), e.g. with a new head.
std::map<std::string, torch::Tensor> checkpoint_tensors(const std::string& path);

// True when `path` is a regular file that starts with the checkpoint magic (cheap: reads 8
// bytes; a directory, device or FIFO is not opened). Loading and peeking go through
// ctrain::read_file, which refuses anything but a regular file, naming the path.
bool is_checkpoint_file(const std::string& path);

// Checkpoint file for a completed epoch, and the existing ones in `dir`, oldest first.
std::string checkpoint_path(const std::string& dir, int64_t epoch);
std::vector<std::string> checkpoint_list(const std::string& dir);

}  // namespace ctrain::engine
