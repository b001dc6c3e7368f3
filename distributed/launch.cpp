#include "distributed/launch.h"

#include <cstdlib>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace ctrain::distributed {
namespace {

// One launcher convention's view of the job; unset fields are -1.
struct Source {
  std::string name;
  int rank = -1, world_size = -1, local_rank = -1, local_world_size = -1;
  std::string rank_var, world_var, local_var;
};

int parse_int(const std::string& value, const std::string& what) {
  try {
    size_t used = 0;
    const long v = std::stol(value, &used);
    if (used != value.size() || v < 0 || v > (1 << 30)) throw std::out_of_range("range");
    return static_cast<int>(v);
  } catch (const std::exception&) {
    throw ConfigError(what + " must be a non-negative integer, got '" + value + "'");
  }
}

int env_int(const EnvLookup& env, const std::string& var) {
  auto v = env(var);
  return v ? parse_int(*v, var) : -1;
}

Source env_source(const EnvLookup& env, const std::string& name, const std::string& rank_var,
                  const std::string& world_var, const std::string& local_var,
                  const std::string& local_world_var) {
  Source s;
  s.name = name;
  s.rank = env_int(env, rank_var);
  s.world_size = env_int(env, world_var);
  s.local_rank = local_var.empty() ? -1 : env_int(env, local_var);
  s.local_world_size = local_world_var.empty() ? -1 : env_int(env, local_world_var);
  s.rank_var = rank_var;
  s.world_var = world_var;
  s.local_var = local_var;
  return s;
}

// TF_CONFIG: {"cluster": {"chief": ["h:p"], "worker": ["h:p", ...]}, "task": {"type":
// "worker", "index": i}}. The chief (if any) is rank 0 and the workers follow.
Source tf_config_source(const EnvLookup& env, std::string* master) {
  Source s;
  s.name = "TF_CONFIG";
  s.rank_var = s.world_var = "TF_CONFIG";
  auto raw = env("TF_CONFIG");
  if (!raw) return s;
  try {
    const auto j = nlohmann::json::parse(*raw);
    const auto& cluster = j.at("cluster");
    const size_t chiefs = cluster.contains("chief") ? cluster.at("chief").size() : 0;
    const size_t workers = cluster.contains("worker") ? cluster.at("worker").size() : 0;
    if (chiefs + workers == 0) throw ConfigError("TF_CONFIG has no cluster.chief or cluster.worker");
    const std::string type = j.at("task").at("type").get<std::string>();
    const int index = j.at("task").at("index").get<int>();
    if (type == "chief") {
      s.rank = index;
    } else if (type == "worker") {
      s.rank = static_cast<int>(chiefs) + index;
    } else {
      throw ConfigError("TF_CONFIG task.type '" + type + "' is not chief or worker");
    }
    s.world_size = static_cast<int>(chiefs + workers);
    *master = chiefs ? cluster.at("chief").at(0).get<std::string>()
                     : cluster.at("worker").at(0).get<std::string>();
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    throw ConfigError(std::string("TF_CONFIG is not valid: ") + e.what(),
                      "expected {\"cluster\": {\"worker\": [\"host:port\", ...]}, "
                      "\"task\": {\"type\": \"worker\", \"index\": N}}");
  }
  return s;
}

// "host:port" -> (host, port); the port is optional.
void split_host_port(const std::string& hp, const std::string& what, std::string* host, int* port) {
  const auto colon = hp.rfind(':');
  if (colon == std::string::npos) {
    *host = hp;
    return;
  }
  *host = hp.substr(0, colon);
  *port = parse_int(hp.substr(colon + 1), what + " port");
  if (*port == 0 || *port > 65535) throw ConfigError(what + " port must be in 1..65535");
}

}  // namespace

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
  };
}

std::string LaunchInfo::describe() const {
  std::ostringstream o;
  o << "rank " << rank << "/" << world_size << " [" << source.at("rank") << " / "
    << source.at("world_size") << "], local_rank " << local_rank << " [" << source.at("local_rank")
    << "], backend " << (backend.empty() ? "auto" : backend) << " [" << source.at("backend")
    << "], init " << init_method << " [" << source.at("init_method") << "]";
  if (!run_id.empty()) o << ", run " << run_id << " [" << source.at("run_id") << "]";
  if (restart_count > 0) o << ", restart " << restart_count;
  return o.str();
}

namespace {

// Where rank, world size and local rank may come from, in order of precedence: the flags, then
// each launcher's variables. TF_CONFIG's master address goes to `tf_master`.
std::vector<Source> rank_sources(const DistFlags& flags, const EnvLookup& env, std::string* tf_master) {
  Source flag_src;
  flag_src.name = "flags";
  flag_src.rank = flags.rank;
  flag_src.world_size = flags.world_size;
  flag_src.local_rank = flags.local_rank;
  flag_src.rank_var = "--rank";
  flag_src.world_var = "--world-size";
  flag_src.local_var = "--local-rank";
  return {
      flag_src,
      env_source(env, "torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
      env_source(env, "Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                 "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
      env_source(env, "PMI", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
      env_source(env, "Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", ""),
      // Azure ML passes --world-size itself (Batch AI samples); AZUREML_NODE_COUNT covers
      // the one-process-per-node jobs that do not.
      env_source(env, "Azure ML", "AZ_BATCHAI_TASK_INDEX", "AZUREML_NODE_COUNT", "", ""),
      tf_config_source(env, tf_master),
  };
}

// Rank, world size and local rank from the first sources that have them, each named in
// info.source; contradictions and impossible values are ConfigErrors.
void resolve_ranks(LaunchInfo& info, const std::vector<Source>& sources) {
  auto label = [](const Source& s, const std::string& var) {
    return s.name == "flags" ? var : var + " (" + s.name + ")";
  };
  // world size: the first source that has one.
  const Source* chosen = nullptr;
  for (const auto& s : sources) {
    if (s.world_size >= 0) {
      chosen = &s;
      break;
    }
  }
  if (chosen != nullptr) {
    info.world_size = chosen->world_size;
    info.source["world_size"] = label(*chosen, chosen->world_var);
    if (info.world_size < 1) {
      throw ConfigError(info.source["world_size"] + " is 0: a job needs at least one process");
    }
  }
  // rank and local rank: the first source that has them and agrees on the world size.
  for (const auto& s : sources) {
    const bool same_job = s.world_size < 0 || s.world_size == info.world_size;
    if (!same_job) continue;
    if (s.rank >= 0 && info.source["rank"] == "default") {
      info.rank = s.rank;
      info.source["rank"] = label(s, s.rank_var);
    } else if (s.rank >= 0 && s.rank != info.rank && s.world_size == info.world_size) {
      throw ConfigError("contradicting ranks: " + info.source["rank"] + " says " +
                            std::to_string(info.rank) + ", " + label(s, s.rank_var) + " says " +
                            std::to_string(s.rank),
                        "unset one of them or make them agree");
    }
    if (s.local_rank >= 0 && info.source["local_rank"] == "default") {
      info.local_rank = s.local_rank;
      info.source["local_rank"] = label(s, s.local_var);
      if (s.local_world_size > 0) info.local_world_size = s.local_world_size;
    }
  }
  if (info.source["rank"] == "default" && info.world_size > 1) {
    throw ConfigError(info.source["world_size"] + " says " + std::to_string(info.world_size) +
                          " processes but no rank is set",
                      "pass --rank or launch with ctrain-launch / torchrun / mpirun");
  }
  if (info.rank >= info.world_size) {
    throw ConfigError("rank " + std::to_string(info.rank) + " (" + info.source["rank"] +
                      ") is not below world size " + std::to_string(info.world_size) + " (" +
                      info.source["world_size"] + ")");
  }
  if (info.source["local_rank"] == "default") {
    // Without a launcher's local rank assume one node: the local rank is the rank.
    info.local_rank = info.rank;
    info.local_world_size = info.world_size;
  }
  if (info.local_world_size < 1 || info.local_rank >= info.local_world_size) {
    info.local_world_size = std::max(info.local_world_size, info.local_rank + 1);
  }

}

// Init method: --dist-url > AZ_BATCHAI_PYTORCH_INIT_METHOD > MASTER_ADDR/PORT (torchrun,
// also honoured under mpirun and Slurm) > AZ_BATCH_MASTER_NODE > TF_CONFIG's first
// chief/worker > 127.0.0.1:29500.
void resolve_init_method(LaunchInfo& info, const DistFlags& flags, const EnvLookup& env,
                         const std::string& tf_master) {
  std::string url, url_src;
  if (!flags.dist_url.empty()) {
    url = flags.dist_url;
    url_src = "--dist-url";
  } else if (auto az = env("AZ_BATCHAI_PYTORCH_INIT_METHOD")) {
    url = *az;
    url_src = "AZ_BATCHAI_PYTORCH_INIT_METHOD (Azure ML)";
  }
  if (url.empty() || url == "env://") {
    std::string host = "127.0.0.1";
    int port = 29500;
    std::string src = "default";
    if (auto node = env("AZ_BATCH_MASTER_NODE")) {
      split_host_port(*node, "AZ_BATCH_MASTER_NODE", &host, &port);
      src = "AZ_BATCH_MASTER_NODE (Azure ML)";
    } else if (!tf_master.empty()) {
      split_host_port(tf_master, "TF_CONFIG master", &host, &port);
      src = "TF_CONFIG";
    }
    if (auto a = env("MASTER_ADDR")) {
      host = *a;
      src = "MASTER_ADDR";
    }
    if (auto p = env("MASTER_PORT")) {
      port = parse_int(*p, "MASTER_PORT");
      if (port == 0 || port > 65535) throw ConfigError("MASTER_PORT must be in 1..65535");
      src = src == "MASTER_ADDR" ? "MASTER_ADDR/MASTER_PORT" : "MASTER_PORT";
    }
    info.master_addr = host;
    info.master_port = port;
    info.init_method = "tcp://" + host + ":" + std::to_string(port);
    info.source["init_method"] = url.empty() ? src : url_src + " env:// -> " + src;
  } else if (url.rfind("tcp://", 0) == 0) {
    split_host_port(url.substr(6), url_src, &info.master_addr, &info.master_port);
    info.init_method = "tcp://" + info.master_addr + ":" + std::to_string(info.master_port);
    info.source["init_method"] = url_src;
  } else if (url.rfind("file://", 0) == 0) {
    if (url.size() <= 7) throw ConfigError(url_src + " file:// needs a path, e.g. file:///tmp/rdzv");
    info.init_method = url;
    info.source["init_method"] = url_src;
  } else {
    throw ConfigError(url_src + " '" + url + "' is not env://, tcp://host:port or file:///path");
  }

}

// The network settings of the environment: Gloo's interfaces, a user's NCCL error handling
// (any of the names 1.13 and 2.x read).
void resolve_network(LaunchInfo& info, const EnvLookup& env) {
  if (auto v = env("GLOO_SOCKET_IFNAME")) info.gloo_socket_ifname = *v;
  for (const char* name : {"TORCH_NCCL_BLOCKING_WAIT", "NCCL_BLOCKING_WAIT", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
                           "NCCL_ASYNC_ERROR_HANDLING"}) {
    if (auto v = env(name)) {
      info.nccl_error_mode = std::string(name) + "=" + *v;
      break;
    }
  }
}

// Run id: the first launcher id that is set; and the launcher's restart count.
void resolve_run(LaunchInfo& info, const EnvLookup& env) {
  for (const char* var : {"TORCHELASTIC_RUN_ID", "OMPI_MCA_ess_base_jobid", "SLURM_JOB_ID",
                          "AZUREML_RUN_ID"}) {
    if (auto id = env(var)) {
      info.run_id = *id;
      info.source["run_id"] = var;
      if (std::string(var) == "SLURM_JOB_ID") {
        if (auto step = env("SLURM_STEP_ID")) info.run_id += "." + *step;
      }
      break;
    }
  }
  if (auto r = env("TORCHELASTIC_RESTART_COUNT")) {
    info.restart_count = parse_int(*r, "TORCHELASTIC_RESTART_COUNT");
  }
}

}  // namespace

LaunchInfo resolve_launch(const DistFlags& flags, const EnvLookup& env) {
  // -1 means "not given"; anything lower is a mistake, not a request for the default.
  for (const auto& [value, flag] : {std::pair{flags.rank, "--rank"}, std::pair{flags.local_rank, "--local-rank"},
                                    std::pair{flags.world_size, "--world-size"}}) {
    if (value < -1) throw ConfigError(std::string(flag) + " must be >= 0, got " + std::to_string(value));
  }
  std::string tf_master;
  const std::vector<Source> sources = rank_sources(flags, env, &tf_master);
  LaunchInfo info;
  info.source = {{"rank", "default"}, {"world_size", "default"}, {"local_rank", "default"},
                 {"backend", "default"}, {"init_method", "default"}};
  resolve_ranks(info, sources);
  // Backend.
  if (!flags.backend.empty()) {
    if (flags.backend != "gloo" && flags.backend != "nccl") {
      throw ConfigError("--dist-backend must be gloo or nccl, got '" + flags.backend + "'");
    }
    info.backend = flags.backend;
    info.source["backend"] = "--dist-backend";
  }

  resolve_init_method(info, flags, env, tf_master);
  resolve_run(info, env);
  resolve_network(info, env);
  return info;
}

}  // namespace ctrain::distributed
