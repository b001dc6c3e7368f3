// ctrain-registry: versioned trained models in a folder (default ./models).
//   ctrain-registry register pytorch-birds outputs/model.pt --tag data=birds
//   ctrain-registry list | show pytorch-birds:2 | path pytorch-birds:latest
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

#include "apps/common/cli.h"
#include "core/json.h"
#include "serve/registry.h"

namespace {

std::map<std::string, std::string> parse_tags(const std::vector<std::string>& tags) {
  std::map<std::string, std::string> out;
  for (const auto& t : tags) {
    const auto eq = t.find('=');
    if (eq == std::string::npos || eq == 0) throw ctrain::ConfigError("--tag " + ctrain::printable(t) + ": expected KEY=VALUE");
    if (!ctrain::is_utf8(t) || ctrain::printable(t) != t) {
      throw ctrain::ConfigError("--tag " + ctrain::printable(t) + ": not printable UTF-8 text",
                                "tags are KEY=VALUE text without control characters, e.g. data=birds");
    }
    out[t.substr(0, eq)] = t.substr(eq + 1);
  }
  return out;
}

std::string metric_of(const nlohmann::json& md) {
  const nlohmann::json& m = md.contains("metrics") ? md["metrics"] : nlohmann::json();
  char buf[32] = "-";
  if (m.is_object() && m.contains("validation_acc") && m["validation_acc"].is_number()) {
    std::snprintf(buf, sizeof(buf), "%.4f", m["validation_acc"].get<double>());
  }
  return buf;
}

int run(int argc, char** argv) {
  std::string root = "models", name, path, ref;
  std::vector<std::string> tags;
  CLI::App app{"ctrain-registry: register trained models as numbered versions, list them, find them"};
  app.option_defaults()->always_capture_default();
  app.add_option("--registry", root, "the registry folder");
  app.require_subcommand(1);
  auto* reg = app.add_subcommand("register", "copy a model.pt (and the model.onnx beside it) into the next version of NAME");
  reg->add_option("name", name, "model name, e.g. pytorch-birds")->required();
  reg->add_option("path", path, "the model.pt a trainer wrote, e.g. outputs/model.pt")->required();
  reg->add_option("--tag", tags, "KEY=VALUE recorded in metadata.json (repeatable)");
  auto* list = app.add_subcommand("list", "every version: name, version, created, validation accuracy, tags");
  auto* show = app.add_subcommand("show", "metadata.json of NAME[:VERSION] (default: latest)");
  show->add_option("model", ref, "NAME[:VERSION|latest]")->required();
  auto* where = app.add_subcommand("path", "the model.pt of NAME[:VERSION|latest], after checking its sha256");
  where->add_option("model", ref, "NAME[:VERSION|latest]")->required();
  if (int code = ctrain::apps::parse_or_exit(app, argc, argv); code >= 0) return code;

  ctrain::serve::Registry registry(root);
  if (reg->parsed()) {
    const auto v = registry.register_model(name, path, parse_tags(tags));
    std::string files;
    for (const auto& [base, info] : v.metadata["files"].items()) files += (files.empty() ? "" : ", ") + base;
    std::printf("registered %s version %lld: %s (%s)\n", v.name.c_str(), static_cast<long long>(v.version),
                v.dir.c_str(), files.c_str());
  } else if (list->parsed()) {
    const auto all = registry.list();
    if (all.empty()) {
      std::printf("no models in %s (ctrain-registry register NAME outputs/model.pt)\n", root.c_str());
      return 0;
    }
    std::printf("%-24s %7s  %-20s  %8s  %s\n", "NAME", "VERSION", "CREATED", "VAL_ACC", "TAGS");
    for (const auto& v : all) {
      std::string tag_text;
      if (v.metadata.contains("tags") && v.metadata["tags"].is_object()) {
        for (const auto& [k, val] : v.metadata["tags"].items()) {
          tag_text += ctrain::printable(k) + "=" + ctrain::printable(val.is_string() ? val.get<std::string>() : ctrain::json_dump(val)) + " ";
        }
      }
      // metadata.json is a file anyone may have edited: nothing in it is assumed to be a string.
      const std::string created = v.metadata.contains("created") && v.metadata["created"].is_string()
                                      ? ctrain::printable(v.metadata["created"].get<std::string>())
                                      : "?";
      std::printf("%-24s %7lld  %-20s  %8s  %s\n", v.name.c_str(), static_cast<long long>(v.version),
                  created.c_str(), metric_of(v.metadata).c_str(), tag_text.c_str());
    }
  } else if (show->parsed()) {
    std::printf("%s\n", ctrain::json_dump(registry.resolve(ctrain::serve::parse_model_ref(ref)).metadata, 2).c_str());
  } else if (where->parsed()) {
    const auto v = registry.resolve(ctrain::serve::parse_model_ref(ref));
    std::printf("%s\n", std::filesystem::absolute(v.model_path()).lexically_normal().c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ctrain::apps::guarded_main("ctrain-registry", [&] { return run(argc, argv); });
}
