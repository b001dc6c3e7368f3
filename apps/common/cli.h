#pragma once
// Flags and the main() wrapper shared by the trainers, so each app's main stays wiring only.
// Header-only: it is included by one translation unit per app.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/torch_error.h"
#include "distributed/launch.h"
#include "engine/config.h"
#include "apps/common/main.h"

namespace ctrain::apps {

// A flag naming one of `choices` (engine/config.h): converted to the enum here, once; a name
// not among them is refused naming the flag and the choices.
template <typename E, size_t N>
CLI::Option* add_choice(CLI::App& app, const std::string& names, E& value, const engine::Choice<E> (&choices)[N],
                        const std::string& help) {
  const CLI::Validator to_enum(
      [&choices](std::string& in) -> std::string {
        for (const auto& c : choices) {
          if (in == c.name) {
            in = std::to_string(static_cast<int>(c.value));  // CLI11 stores an enum from its number
            return "";
          }
        }
        return "must be " + engine::choice_list(choices) + ", got '" + in + "'";
      },
      "", "");
  return app.add_option(names, value, help)
      ->transform(to_enum)
      ->type_name("TEXT")
      ->default_str(engine::choice_name(choices, value));  // not the enum's number
}

// Both spellings of each flag: the reference scripts use underscores, CLIs use dashes.
inline void add_train_flags(CLI::App& app, engine::TrainConfig& c) {
  app.add_option("--output-dir,--output_dir", c.output_dir, "where checkpoints, metrics and model go");
  app.add_option("--seed", c.seed, "seed for init and shuffling");
  app.add_option("--device", c.device, "auto | cpu | cuda[:N] (cuda: one GPU per local rank)");
  app.add_option("--threads", c.threads, "intra-op CPU threads (0: LibTorch default)");
  app.add_option("--momentum", c.optim.momentum, "SGD momentum");
  app.add_flag("--resume", c.checkpoint.resume, "continue from the newest checkpoint in --output-dir");
  app.add_option("--resume-from,--resume_from", c.checkpoint.resume_from, "continue from this checkpoint file");
  app.add_option("--checkpoint-every,--checkpoint_every", c.checkpoint.every, "epochs between checkpoints (0: final only)");
  app.add_option("--keep-checkpoints,--keep_checkpoints", c.checkpoint.keep, "newest checkpoints kept (0: all)");
  app.add_option("--log-interval,--log_interval", c.log_interval, "steps between progress lines (0: auto)");
  app.add_option("--accumulate", c.dist.accumulate, "micro-batches per optimizer step");
  add_choice(app, "--on-nan,--on_nan", c.on_nan, engine::kOnNanChoices, "stop | skip: what a non-finite loss does");
  app.add_flag("--cuda-graph,--cuda_graph", c.cuda_graph,
               "capture the training step in a CUDA graph (CUDA, one process; else says why and runs eagerly)");
  add_choice(app, "--amp", c.amp, engine::kAmpChoices,
             "off | bf16 | fp16: mixed precision (autocast; fp16 adds loss scaling, CUDA only)");
  app.add_option("--bucket-mb,--bucket_mb", c.dist.bucket_mb, "DDP gradient bucket size in MB");
  app.add_option("--dist-timeout,--dist_timeout", c.dist.timeout_s, "seconds before a rendezvous or collective gives up");
}

// The flags the Azure ML PyTorch samples pass; the launch environment fills in the rest.
inline void add_dist_flags(CLI::App& app, distributed::DistFlags& f) {
  app.add_option("--dist-backend,--dist_backend", f.backend, "gloo | nccl (default: nccl on CUDA, else gloo)");
  app.add_option("--dist-url,--dist_url", f.dist_url, "env:// | tcp://host:port | file:///path");
  app.add_option("--rank", f.rank, "this process's rank (default: from the launcher's environment)");
  app.add_option("--world-size,--world_size", f.world_size, "number of processes");
  app.add_option("--local-rank,--local_rank", f.local_rank, "rank on this node (picks the GPU)");
}

// The flag of `app` most like `given` (say --data-folder where the program takes --data-dir),
// or "" when none is close: the one sharing the longest leading run of characters (five at
// least: "--data-"), else one within two edits. '_' and '-' count as the same.
inline std::string closest_flag(const CLI::App& app, const std::string& given) {
  auto norm = [](std::string s) {
    s.erase(0, s.find_first_not_of('-'));
    std::replace(s.begin(), s.end(), '_', '-');
    return s;
  };
  auto edits = [](const std::string& a, const std::string& b) {  // Levenshtein distance
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      size_t diag = row[0];
      row[0] = i;
      for (size_t j = 1; j <= b.size(); ++j) {
        const size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    return row[b.size()];
  };
  const std::string g = norm(given);
  std::string best;
  size_t best_prefix = 4, best_edits = 3;  // a match must beat these
  for (const CLI::Option* o : app.get_options()) {
    for (const std::string& name : o->get_lnames()) {
      const std::string n = norm(name);
      size_t prefix = 0;
      while (prefix < n.size() && prefix < g.size() && n[prefix] == g[prefix]) ++prefix;
      const size_t d = edits(n, g);
      if (prefix > best_prefix || (prefix == best_prefix && prefix > 4 && d < best_edits) ||
          (best_prefix == 4 && d < best_edits)) {
        if (prefix > 4) best_prefix = prefix;
        best_edits = d;
        best = "--" + name;
      }
    }
  }
  return best;
}

// Parses argv; returns an exit code to return now, or -1 to go on. Usage errors exit 2. A flag
// the program does not take is named first, with the closest one it does take: CLI11 would
// report a required flag as missing before it (--data-dir given for --data-folder), or list
// every leftover word, values first, suggesting nothing.
inline int parse_or_exit(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Only where an unknown flag explains the error: it is left over, or a required flag is
    // missing (misspelt, perhaps). Words after "--" are another program's (ctrain-sweep's).
    std::string unknown;
    const bool explains = dynamic_cast<const CLI::ExtrasError*>(&e) != nullptr ||
                          dynamic_cast<const CLI::RequiredError*>(&e) != nullptr;
    if (explains && !app.get_allow_extras()) {
      for (const std::string& word : app.remaining()) {
        if (word == "--") break;
        if (word.size() > 1 && word[0] == '-') {
          unknown = word.substr(0, word.find('='));
          break;
        }
      }
    }
    if (unknown.empty()) {
      app.exit(e);
      return 2;
    }
    const std::string program = std::filesystem::path(argv[0]).filename().string();
    const std::string like = closest_flag(app, unknown);
    std::cerr << program << ": error: unknown flag " << unknown
              << (like.empty() ? std::string() : " (did you mean " + like + "?)") << "\n"
              << "Run with --help for the flags it takes.\n";
    return 2;
  }
  return -1;
}

// The tail every trainer shares: --no-onnx, the training and distributed flags, parsing and
// validation. Returns an exit code to return now, or -1 to go on.
inline int add_common_flags_and_parse(CLI::App& app, engine::TrainConfig& cfg,
                                      distributed::DistFlags& dist, bool& no_onnx, int argc,
                                      char** argv) {
  app.add_flag("--no-onnx,--no_onnx", no_onnx, "do not export outputs/model.onnx at the end");
  add_train_flags(app, cfg);
  add_dist_flags(app, dist);
  if (int code = parse_or_exit(app, argc, argv); code >= 0) return code;
  cfg.validate();
  return -1;
}

}  // namespace ctrain::apps
