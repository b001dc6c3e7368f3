// The ImageFolder layout (root/<class>/<image>), as torchvision's datasets.ImageFolder reads it:
// classes are the sorted folder names, samples the sorted image files under each.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iterator>

#include "core/error.h"
#include "data/image_folder.h"

namespace ctrain::data {
namespace {

namespace fs = std::filesystem;

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  static const char* kExts[] = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"};
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* e) { return ext == e; });
}

}  // namespace

ImageFolderIndex index_image_folder(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    throw Error("image folder " + root + " does not exist or is not a directory",
                "expected root/<class>/<image> (e.g. fowl_data/train/chicken/*.jpg)");
  }
  ImageFolderIndex idx;
  idx.root = root;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (e.is_directory(ec)) idx.classes.push_back(e.path().filename().string());
  }
  std::sort(idx.classes.begin(), idx.classes.end());
  if (idx.classes.empty()) {
    throw Error(root + " has no class folders", "expected root/<class>/<image>");
  }
  for (size_t c = 0; c < idx.classes.size(); ++c) {
    std::vector<std::string> files;
    const fs::path dir = fs::path(root) / idx.classes[c];
    for (const auto& e : fs::recursive_directory_iterator(
             dir, fs::directory_options::follow_directory_symlink, ec)) {
      if (e.is_regular_file(ec) && is_image_file(e.path())) files.push_back(e.path().string());
    }
    if (files.empty()) {
      throw Error("class folder " + dir.string() + " has no images",
                  "remove the empty folder or add .jpg/.png files to it");
    }
    std::sort(files.begin(), files.end());
    for (auto& f : files) idx.samples.emplace_back(std::move(f), static_cast<int64_t>(c));
  }
  return idx;
}

void check_val_classes(const ImageFolderIndex& train, const ImageFolderIndex& val) {
  if (val.classes != train.classes) {
    std::string extra;
    for (const auto& c : val.classes) {
      if (std::find(train.classes.begin(), train.classes.end(), c) == train.classes.end()) extra += " " + c;
    }
    throw Error("the classes of " + val.root + " differ from those of " + train.root +
                    (extra.empty() ? std::string(" (the training set has classes validation lacks)")
                                   : " (validation has classes training lacks:" + extra + ")"),
                "train and val must have the same class folders");
  }
}

}  // namespace ctrain::data
