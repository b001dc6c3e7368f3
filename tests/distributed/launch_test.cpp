#include "distributed/launch.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace ctrain::distributed {
namespace {

using Env = std::map<std::string, std::string>;

EnvLookup env_of(const Env& e) {
  return [e](const std::string& k) -> std::optional<std::string> {
    auto it = e.find(k);
    if (it == e.end()) return std::nullopt;
    return it->second;
  };
}

LaunchInfo resolve(const Env& e, const DistFlags& f = {}) { return resolve_launch(f, env_of(e)); }

std::string error_of(const Env& e, const DistFlags& f = {}) {
  try {
    resolve(e, f);
  } catch (const ConfigError& err) {
    return err.what();
  }
  return "";
}

TEST(ResolveLaunchTest, SingleProcessByDefault) {
  const auto i = resolve({});
  EXPECT_EQ(i.rank, 0);
  EXPECT_EQ(i.world_size, 1);
  EXPECT_FALSE(i.is_distributed());
  EXPECT_EQ(i.init_method, "tcp://127.0.0.1:29500");
  EXPECT_EQ(i.source.at("rank"), "default");
}

TEST(ResolveLaunchTest, Torchrun) {
  const auto i = resolve({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"},
                          {"LOCAL_WORLD_SIZE", "2"}, {"MASTER_ADDR", "10.1.2.3"},
                          {"MASTER_PORT", "1234"}, {"TORCHELASTIC_RESTART_COUNT", "2"}});
  EXPECT_EQ(i.rank, 3);
  EXPECT_EQ(i.world_size, 4);
  EXPECT_EQ(i.local_rank, 1);
  EXPECT_EQ(i.local_world_size, 2);
  EXPECT_EQ(i.init_method, "tcp://10.1.2.3:1234");
  EXPECT_EQ(i.restart_count, 2);
  EXPECT_EQ(i.source.at("rank"), "RANK (torchrun)");
  EXPECT_NE(i.describe().find("WORLD_SIZE (torchrun)"), std::string::npos);
}

TEST(ResolveLaunchTest, OpenMpi) {
  const auto i = resolve({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                          {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_EQ(i.rank, 1);
  EXPECT_EQ(i.world_size, 2);
  EXPECT_EQ(i.local_rank, 1);
  EXPECT_EQ(i.source.at("rank"), "OMPI_COMM_WORLD_RANK (Open MPI)");
  EXPECT_EQ(i.init_method, "tcp://127.0.0.1:29500");  // documented single-node default
}

TEST(ResolveLaunchTest, RunIdFromTheLauncher) {
  EXPECT_EQ(resolve({}).run_id, "");
  EXPECT_EQ(resolve({{"OMPI_MCA_ess_base_jobid", "1766064129"}, {"SLURM_JOB_ID", "7"}}).run_id,
            "1766064129");
  EXPECT_EQ(resolve({{"SLURM_JOB_ID", "7"}, {"SLURM_STEP_ID", "2"}}).run_id, "7.2");
  EXPECT_EQ(resolve({{"AZUREML_RUN_ID", "exp_1"}}).run_id, "exp_1");
  const auto i = resolve({{"TORCHELASTIC_RUN_ID", "job-a"}, {"SLURM_JOB_ID", "7"}});
  EXPECT_EQ(i.run_id, "job-a");
  EXPECT_NE(i.describe().find("run job-a [TORCHELASTIC_RUN_ID]"), std::string::npos) << i.describe();
}

TEST(ResolveLaunchTest, Pmi) {
  const auto i = resolve({{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}});
  EXPECT_EQ(i.rank, 2);
  EXPECT_EQ(i.world_size, 3);
  EXPECT_EQ(i.local_rank, 2);  // no local rank given: one node assumed
}

TEST(ResolveLaunchTest, Slurm) {
  const auto i = resolve({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                          {"MASTER_ADDR", "node01"}});
  EXPECT_EQ(i.rank, 5);
  EXPECT_EQ(i.world_size, 8);
  EXPECT_EQ(i.local_rank, 1);
  EXPECT_EQ(i.master_addr, "node01");
}

TEST(ResolveLaunchTest, AzureMlFlagsAndEnvironment) {
  // As the Azure ML sample passes them: --world-size, --rank, --dist-url from its variables.
  DistFlags f;
  f.world_size = 2;
  f.rank = 1;
  f.dist_url = "tcp://10.0.0.4:6105";
  f.backend = "gloo";
  const auto i = resolve({{"AZ_BATCHAI_TASK_INDEX", "1"}}, f);
  EXPECT_EQ(i.rank, 1);
  EXPECT_EQ(i.init_method, "tcp://10.0.0.4:6105");
  EXPECT_EQ(i.backend, "gloo");
  EXPECT_EQ(i.source.at("rank"), "--rank");
  // Without flags: the task index, the node count and the init method from the environment.
  const auto j = resolve({{"AZ_BATCHAI_TASK_INDEX", "1"}, {"AZUREML_NODE_COUNT", "2"},
                          {"AZ_BATCHAI_PYTORCH_INIT_METHOD", "tcp://10.0.0.4:6105"}});
  EXPECT_EQ(j.rank, 1);
  EXPECT_EQ(j.world_size, 2);
  EXPECT_EQ(j.master_port, 6105);
  const auto k = resolve({{"AZ_BATCHAI_TASK_INDEX", "0"}, {"AZUREML_NODE_COUNT", "2"},
                          {"AZ_BATCH_MASTER_NODE", "10.0.0.9:6000"}});
  EXPECT_EQ(k.init_method, "tcp://10.0.0.9:6000");
}

TEST(ResolveLaunchTest, TfConfig) {
  const std::string tf =
      R"({"cluster": {"chief": ["h0:2222"], "worker": ["h1:2222", "h2:2222"]},
          "task": {"type": "worker", "index": 1}})";
  const auto i = resolve({{"TF_CONFIG", tf}});
  EXPECT_EQ(i.world_size, 3);
  EXPECT_EQ(i.rank, 2);  // chief is rank 0, workers follow
  EXPECT_EQ(i.init_method, "tcp://h0:2222");
  EXPECT_NE(error_of({{"TF_CONFIG", "{not json"}}).find("TF_CONFIG"), std::string::npos);
  EXPECT_NE(error_of({{"TF_CONFIG", R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}})"}})
                .find("ps"),
            std::string::npos);
}

TEST(ResolveLaunchTest, FileInitMethod) {
  DistFlags f;
  f.dist_url = "file:///tmp/rdzv";
  f.rank = 0;
  f.world_size = 2;
  EXPECT_EQ(resolve({}, f).init_method, "file:///tmp/rdzv");
}

TEST(ResolveLaunchTest, Precedence) {
  // Flags beat torchrun, torchrun beats Open MPI (same job: they agree).
  DistFlags f;
  f.rank = 1;
  const auto i = resolve({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "1"},
                          {"OMPI_COMM_WORLD_SIZE", "2"}}, f);
  EXPECT_EQ(i.source.at("rank"), "--rank");
  EXPECT_EQ(i.source.at("world_size"), "WORLD_SIZE (torchrun)");
  // torchrun inside a one-task Slurm job: Slurm describes the allocation, not this job.
  const auto j = resolve({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"SLURM_PROCID", "0"},
                          {"SLURM_NTASKS", "1"}});
  EXPECT_EQ(j.rank, 1);
  EXPECT_EQ(j.world_size, 2);
}

TEST(ResolveLaunchTest, ContradictionsNameBothSources) {
  const std::string e = error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"},
                                  {"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}});
  EXPECT_NE(e.find("RANK (torchrun)"), std::string::npos) << e;
  EXPECT_NE(e.find("OMPI_COMM_WORLD_RANK (Open MPI)"), std::string::npos) << e;
  DistFlags f;
  f.rank = 0;
  EXPECT_NE(error_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}}, f).find("--rank"), std::string::npos);
}

TEST(ResolveLaunchTest, InvalidValues) {
  EXPECT_NE(error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}}).find("not below world size"), std::string::npos);
  EXPECT_NE(error_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}}).find("RANK"), std::string::npos);
  EXPECT_NE(error_of({{"WORLD_SIZE", "2"}}).find("no rank"), std::string::npos);
  EXPECT_NE(error_of({{"WORLD_SIZE", "0"}, {"RANK", "0"}}).find("at least one"), std::string::npos);
  EXPECT_NE(error_of({{"MASTER_PORT", "70000"}}).find("MASTER_PORT"), std::string::npos);
  DistFlags f;
  f.backend = "mpi";
  EXPECT_NE(error_of({}, f).find("--dist-backend"), std::string::npos);
  f = DistFlags{};
  f.dist_url = "udp://x";
  EXPECT_NE(error_of({}, f).find("--dist-url"), std::string::npos);
}

}  // namespace
}  // namespace ctrain::distributed
