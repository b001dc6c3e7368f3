#pragma once
// Where this process sits in a job: rank, local rank, world size, backend and init method,
// resolved from flags and from the launch environment of every common launcher. The one
// place in ctrain that reads the launch environment.
//
// Vocabulary (used across ctrain): a *rank* is one training process; *world_size* processes
// form the job; *local_rank* is the index among the processes on this node (it picks the GPU);
// the *global batch* is world_size x the per-rank *micro-batch* (x --accumulate steps).
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace ctrain::distributed {

// Explicit flags (the Azure ML PyTorch sample's names); unset fields are empty / -1.
struct DistFlags {
  std::string backend;   // --dist-backend gloo|nccl ("" = nccl on CUDA, else gloo)
  std::string dist_url;  // --dist-url env:// | tcp://host:port | file:///path
  int rank = -1;         // --rank
  int world_size = -1;   // --world-size
  int local_rank = -1;   // --local-rank
};

struct LaunchInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string backend;      // "gloo", "nccl" or "" (decided by the device)
  std::string init_method;  // normalised: "tcp://host:port" or "file:///path"
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;  // default rendezvous port, as torchrun's
  int restart_count = 0;    // > 0 when a launcher restarted the group: resume from checkpoints
  // The launcher's id for this job (TORCHELASTIC_RUN_ID, Open MPI's job id, SLURM_JOB_ID.STEP,
  // AZUREML_RUN_ID); "" when none is known. Rank 0's store refuses peers of another run.
  std::string run_id;
  // The launch environment's network settings, read here with the rest of it:
  std::string gloo_socket_ifname;  // GLOO_SOCKET_IFNAME: the interfaces Gloo uses ("" to find one)
  std::string nccl_error_mode;     // "NAME=VALUE" of the user's own NCCL error-handling choice, or ""
  // field -> the variable or flag it came from ("RANK (torchrun)", "--rank", "default").
  std::map<std::string, std::string> source;

  bool is_distributed() const { return world_size > 1; }
  // One line: every value with where it came from (rank 0 prints it).
  std::string describe() const;
};

// Reads an environment variable; nullopt when unset. Tests pass a map-backed one.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

// Precedence, per value: flags > torchrun (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT) > Open MPI (OMPI_COMM_WORLD_*) > PMI (PMI_RANK, PMI_SIZE) >
// Slurm (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) > Azure ML (AZ_BATCHAI_TASK_INDEX,
// AZUREML_NODE_COUNT, AZ_BATCHAI_PYTORCH_INIT_METHOD, AZ_BATCH_MASTER_NODE) > TF_CONFIG > single process.
// A lower source that describes the same world size but another rank is a contradiction
// (ConfigError naming both); one with a different world size is an outer launcher (Slurm
// around torchrun) and is ignored. Also throws for rank >= world size and malformed values.
// The run id comes from the first of TORCHELASTIC_RUN_ID, OMPI_MCA_ess_base_jobid,
// SLURM_JOB_ID(.SLURM_STEP_ID), AZUREML_RUN_ID that is set.
LaunchInfo resolve_launch(const DistFlags& flags, const EnvLookup& env);

}  // namespace ctrain::distributed
