// Multi-node jobs on hosts of their own: each node is a network namespace with its own address,
// joined to the others by veth links, running its own ctrain-launch, as on a real cluster. Where
// namespaces cannot be made (not root, no CAP_SYS_ADMIN, no iproute2) the tests are skipped
// with the reason.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "../support/fixtures.h"
#include "engine/checkpoint.h"
#include "models/mlp.h"

namespace {

using ctrain::testing::bin;
using ctrain::testing::max_abs_diff;
using ctrain::testing::read_text;
using ctrain::testing::run_command;
using ctrain::testing::spawn_command;
using ctrain::testing::wait_exit;

// N hosts: namespaces "ct<pid>h<i>", host i at 10.77.0.<i+1>/24 on a bridge-free star: host 0
// has one veth to each other host (two hosts: one link). Addresses repeat across test processes
// without clashing: each process's namespaces form a network of their own. Removed on
// destruction, failed test or not (deleting a namespace deletes its veth ends).
class Hosts {
 public:
  explicit Hosts(int n) {
    const std::string tag = "ct" + std::to_string(::getpid());
    for (int i = 0; i < n; ++i) names_.push_back(tag + "h" + std::to_string(i));
    std::string script = "set -e; ";
    for (const auto& ns : names_) script += "ip netns add " + ns + "; ip -n " + ns + " link set lo up; ";
    for (int i = 1; i < n; ++i) {
      const std::string a = tag + "a" + std::to_string(i), b = tag + "b" + std::to_string(i);
      script += "ip link add " + a + " netns " + names_[0] + " type veth peer name " + b + " netns " + names_[i] + "; ";
      script += "ip -n " + names_[0] + " addr add " + address(0) + "/32 dev " + a + "; ";
      script += "ip -n " + names_[0] + " link set " + a + " up; ";
      script += "ip -n " + names_[0] + " route add " + address(i) + "/32 dev " + a + "; ";
      script += "ip -n " + names_[i] + " addr add " + address(i) + "/32 dev " + b + "; ";
      script += "ip -n " + names_[i] + " link set " + b + " up; ";
      script += "ip -n " + names_[i] + " route add " + address(0) + "/32 dev " + b + "; ";
    }
    const auto r = run_command(script);
    if (r.exit_code != 0) why_not_ = "cannot make network namespaces here (root and iproute2 needed): " + r.output;
  }
  ~Hosts() {
    for (const auto& ns : names_) run_command("ip netns del " + ns + " 2>/dev/null");
  }
  const std::string& why_not() const { return why_not_; }
  static std::string address(int i) { return "10.77.0." + std::to_string(i + 1); }
  // `cmd` run on host i, without the interface variables a user may have set.
  std::string on(int i, const std::string& cmd) const {
    return "ip netns exec " + names_[static_cast<size_t>(i)] + " env -u GLOO_SOCKET_IFNAME -u NCCL_SOCKET_IFNAME " + cmd;
  }

 private:
  std::vector<std::string> names_;
  std::string why_not_;
};

class MultiNodeTest : public ctrain::testing::SyntheticMnistSuite {
 protected:
  std::string mnist(const std::string& args) const {
    return mnist_on_data("--device cpu --learning-rate 0.05 --momentum 0.5 --epochs 2 " + args);
  }
  std::string node(int rank, int nnodes, const std::string& mnist_args) const {
    return bin("ctrain-launch") + " --nnodes " + std::to_string(nnodes) + " --node-rank " + std::to_string(rank) +
           " --nproc-per-node 1 --master-addr " + Hosts::address(0) + " --master-port 29517 " +
           mnist("--batch-size 32 " + mnist_args);
  }
};

// No GLOO_SOCKET_IFNAME: each node finds the interface its route to MASTER_ADDR leaves by,
// says so, and the job equals the same two ranks run on one host.
TEST_F(MultiNodeTest, TwoHostsFindTheirInterfaceAndEqualAOneHostRun) {
  Hosts hosts(2);
  if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
  const std::string log0 = out_ / "node0.log", log1 = out_ / "node1.log";
  const pid_t n0 = spawn_command(hosts.on(0, node(0, 2, "--output-dir " + (out_ / "h0"))), log0);
  const pid_t n1 = spawn_command(hosts.on(1, node(1, 2, "--output-dir " + (out_ / "h1"))), log1);
  const int rc0 = wait_exit(n0), rc1 = wait_exit(n1);
  const std::string text0 = read_text(log0), text1 = read_text(log1);
  ASSERT_EQ(rc0, 0) << text0 << "\n--- node 1:\n" << text1;
  ASSERT_EQ(rc1, 0) << text1 << "\n--- node 0:\n" << text0;
  // Each node says which interface and address the others reach it on: its veth, never loopback.
  EXPECT_NE(text0.find("gloo over ct"), std::string::npos) << text0;
  EXPECT_NE(text0.find("(" + Hosts::address(0) + "): the route to MASTER_ADDR"), std::string::npos) << text0;
  EXPECT_NE(text1.find("(" + Hosts::address(1) + "): the route to MASTER_ADDR"), std::string::npos) << text1;
  EXPECT_EQ(text1.find("127.0."), std::string::npos) << text1;

  const auto one_host = run_command(ctrain::testing::launch_cmd(2, mnist("--batch-size 32 --output-dir " + (out_ / "one"))));
  ASSERT_EQ(one_host.exit_code, 0) << one_host.output;
  const auto two = ctrain::testing::mlp_params(out_ / "h0/model.pt");
  EXPECT_LT(max_abs_diff(ctrain::testing::mlp_params(out_ / "one/model.pt"), two), 1e-5);
  // A different run really differs, so the comparison above can fail.
  const auto other = run_command(mnist("--batch-size 32 --output-dir " + (out_ / "other")));  // global batch 32
  ASSERT_EQ(other.exit_code, 0) << other.output;
  EXPECT_GT(max_abs_diff(ctrain::testing::mlp_params(out_ / "other/model.pt"), two), 1e-3);
}

}  // namespace
