#pragma once
// Hosts of their own for the multi-node tests: network namespaces with their own addresses,
// joined by veth links, and what can be done to those links (cut, netem, link_delay).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "fixtures.h"

namespace ctrain::testing {

// N hosts: namespaces "ct<pid>h<i>", host i at <base><i+1> (10.77.0.<i+1> by default) on a bridge-free star: host 0
// has one veth to each other host (two hosts: one link). Addresses repeat across test processes
// without clashing: each process's namespaces form a network of their own. Removed on
// destruction, failed test or not (deleting a namespace deletes its veth ends).
class Hosts {
 public:
  explicit Hosts(int n, std::string base = "10.77.0.") : base_(std::move(base)) {
    const std::string tag = "ct" + std::to_string(::getpid());
    for (int i = 0; i < n; ++i) names_.push_back(tag + "h" + std::to_string(i));
    std::string script = "set -e; ";
    for (const auto& ns : names_) script += "ip netns add " + ns + "; ip -n " + ns + " link set lo up; ";
    for (int i = 1; i < n; ++i) {
      const std::string a = tag + "a" + std::to_string(i), b = tag + "b" + std::to_string(i);
      script += "ip link add " + a + " netns " + names_[0] + " type veth peer name " + b + " netns " + names_[i] + "; ";
      script += "ip -n " + names_[0] + " addr add " + at(0) + "/32 dev " + a + "; ";
      script += "ip -n " + names_[0] + " link set " + a + " up; ";
      script += "ip -n " + names_[0] + " route add " + at(i) + "/32 dev " + a + "; ";
      script += "ip -n " + names_[i] + " addr add " + at(i) + "/32 dev " + b + "; ";
      script += "ip -n " + names_[i] + " link set " + b + " up; ";
      script += "ip -n " + names_[i] + " route add " + at(0) + "/32 dev " + b + "; ";
    }
    const auto r = run_command(script);
    if (r.exit_code != 0) why_not_ = "cannot make network namespaces here (root and iproute2 needed): " + r.output;
  }
  ~Hosts() {
    for (const auto& ns : names_) run_command("ip netns del " + ns + " 2>/dev/null");
  }
  const std::string& why_not() const { return why_not_; }
  const std::string& name(int i) const { return names_[static_cast<size_t>(i)]; }
  // Takes host i's link to host 0 down (both ends), or brings it back with its routes (a link
  // going down drops the routes through it).
  void cut(int i) const {
    run_command("ip -n " + names_[0] + " link set " + veth('a', i) + " down; ip -n " + names_[i] + " link set " +
                veth('b', i) + " down");
  }
  void restore(int i) const {
    run_command("ip -n " + names_[0] + " link set " + veth('a', i) + " up; ip -n " + names_[i] + " link set " +
                veth('b', i) + " up; ip -n " + names_[0] + " route replace " + at(i) + "/32 dev " + veth('a', i) +
                "; ip -n " + names_[i] + " route replace " + at(0) + "/32 dev " + veth('b', i));
  }
  // `tc netem` on both ends of host i's link (e.g. "delay 50ms loss 1%"); "" when done, else why
  // not (the kernel's sch_netem may be missing).
  std::string netem(int i, const std::string& spec) const {
    const auto r = run_command("ip netns exec " + names_[0] + " tc qdisc add dev " + veth('a', i) + " root netem " +
                               spec + " && ip netns exec " + names_[i] + " tc qdisc add dev " + veth('b', i) +
                               " root netem " + spec);
    return r.exit_code == 0 ? "" : "tc netem is not available here: " + r.output;
  }
  // Packets the netem qdiscs of host i's link dropped (its loss), both ends.
  long long dropped(int i) const {
    long long total = 0;
    for (const auto& [ns, dev] : {std::pair{names_[0], veth('a', i)}, std::pair{names_[static_cast<size_t>(i)], veth('b', i)}}) {
      const std::string out = run_command("ip netns exec " + ns + " tc -s qdisc show dev " + dev).output;
      const auto at = out.find("dropped ");
      if (at != std::string::npos) total += std::atoll(out.c_str() + at + 8);
    }
    return total;
  }
  static std::string address(int i) { return "10.77.0." + std::to_string(i + 1); }
  std::string at(int i) const { return base_ + std::to_string(i + 1); }
  std::string veth(char end, int i) const { return "ct" + std::to_string(::getpid()) + end + std::to_string(i); }
  // `cmd` run on host i, without the interface variables a user may have set.
  std::string on(int i, const std::string& cmd) const {
    return "ip netns exec " + names_[static_cast<size_t>(i)] + " env -u GLOO_SOCKET_IFNAME -u NCCL_SOCKET_IFNAME " + cmd;
  }

 private:
  std::string base_;
  std::vector<std::string> names_;
  std::string why_not_;
};

// netem's "delay D loss P" on host i's link where the kernel has no sch_netem (as on CI's
// machines): on each end, iptables sends the packets arriving from the link to an NFQUEUE that
// tests/support/link_delay holds for D and drops from with probability P. Arriving, not
// leaving: a packet held on its way out still counts against its TCP socket's small queue,
// which would throttle the sender to two packets per delay. Both ends stop on destruction.
class LinkDelay {
 public:
  LinkDelay(const Hosts& hosts, int i, int delay_ms, double loss, const std::string& log_prefix) {
#ifndef CTRAIN_TESTS_HAVE_LINK_DELAY
    (void)hosts, (void)i, (void)delay_ms, (void)loss, (void)log_prefix;
    why_not_ = "link_delay was not built (libnetfilter-queue-dev missing)";
#else
    for (int end = 0; end < 2; ++end) {
      const std::string on = "ip netns exec " + hosts.name(end == 0 ? 0 : i) + " ";
      const auto r = run_command(on + "iptables -A INPUT -i " + hosts.veth(end == 0 ? 'a' : 'b', i) +
                                 " -j NFQUEUE --queue-num 7");
      if (r.exit_code != 0) {
        why_not_ = "iptables cannot queue packets here: " + r.output;
        return;
      }
      logs_.push_back(log_prefix + std::to_string(end) + ".log");
      pids_.push_back(spawn_command(on + bin("link_delay") + " --queue 7 --delay-ms " + std::to_string(delay_ms) +
                                        " --loss " + std::to_string(loss) + " --seed " + std::to_string(end + 1),
                                    logs_.back()));
    }
    for (const auto& log : logs_) {
      if (!ctrain::testing::poll_until([&] { return read_text(log).find("ready") != std::string::npos; }, 10))
        why_not_ = "link_delay did not start: " + read_text(log);
    }
#endif
  }
  ~LinkDelay() { stop(); }
  LinkDelay(const LinkDelay&) = delete;
  LinkDelay& operator=(const LinkDelay&) = delete;
  const std::string& why_not() const { return why_not_; }
  // Stops both ends; the packets they dropped.
  long long stop() {
    long long dropped = 0;
    for (size_t k = 0; k < pids_.size(); ++k) {
      ::kill(pids_[k], SIGTERM);
      wait_exit(pids_[k]);
      const std::string text = read_text(logs_[k]);
      long long packets = 0, lost = 0;
      if (const auto at = text.find("link_delay: "); at != std::string::npos &&
          std::sscanf(text.c_str() + at, "link_delay: %lld packets, %lld dropped", &packets, &lost) == 2)
        dropped += lost;
    }
    pids_.clear();
    return dropped;
  }

 private:
  std::vector<pid_t> pids_;
  std::vector<std::string> logs_;
  std::string why_not_;
};

}  // namespace ctrain::testing
