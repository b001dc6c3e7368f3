// link_delay: delay and loss on a link, for kernels without sch_netem (Debian's cloud kernels and
// this project's CI machines lack it; `tc netem` is the tool to use where it exists).
//
// An iptables rule sends the packets a host receives from the link to an NFQUEUE; this
// program, run in that host's network namespace, drops each with probability --loss and
// releases the others --delay-ms after they arrived, in arrival order: netem's "delay D loss P"
// without jitter. The kernel keeps each packet until its verdict, so TCP sees a real longer
// round trip and real losses it must retransmit. On the receiving side, not the sending one: a
// packet held on its way out still counts against its socket's TCP small queue, which then lets
// two packets through per delay (a 20 MB transfer over 50 ms took 348 s instead of 1.6 s).
// Written by hand because no packaged tool does this on such a kernel (libnetfilter_queue gives
// the queue, not the delay).
//
//   iptables -A INPUT -i veth0 -j NFQUEUE --queue-num 7
//   link_delay --queue 7 --delay-ms 50 --loss 0.01
//
// Prints "ready" once the queue is bound, and on SIGTERM/SIGINT a line with its counts
// ("link_delay: N packets, M dropped, ..."), then exits 0.
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <random>

namespace {

using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

struct Held {
  uint32_t id;
  Clock::time_point due;
};

struct Queue {
  std::chrono::milliseconds delay{0};
  std::bernoulli_distribution lose{0.0};
  std::mt19937_64 rng{1};
  std::deque<Held> held;
  long long packets = 0, dropped = 0;
  nfq_q_handle* handle = nullptr;
};

int on_packet(nfq_q_handle* qh, nfgenmsg*, nfq_data* nfa, void* data) {
  auto& q = *static_cast<Queue*>(data);
  const nfqnl_msg_packet_hdr* ph = nfq_get_msg_packet_hdr(nfa);
  if (ph == nullptr) return 0;
  const uint32_t id = ntohl(ph->packet_id);
  ++q.packets;
  if (q.lose(q.rng)) {
    ++q.dropped;
    return nfq_set_verdict(qh, id, NF_DROP, 0, nullptr);
  }
  q.held.push_back({id, Clock::now() + q.delay});
  return 0;
}

// Releases every held packet whose time has come; returns the poll timeout until the next one.
int release_due(Queue& q) {
  const auto now = Clock::now();
  while (!q.held.empty() && q.held.front().due <= now) {
    nfq_set_verdict(q.handle, q.held.front().id, NF_ACCEPT, 0, nullptr);
    q.held.pop_front();
  }
  if (q.held.empty()) return 200;
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(q.held.front().due - now).count();
  return static_cast<int>(wait < 1 ? 1 : wait);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Delays and drops the packets of an NFQUEUE (netem's delay and loss in user space)"};
  uint16_t queue_num = 0;
  int delay_ms = 50;
  double loss = 0.0;
  uint64_t seed = 1;
  app.add_option("--queue", queue_num, "NFQUEUE number (iptables ... -j NFQUEUE --queue-num N)")->required();
  app.add_option("--delay-ms", delay_ms, "how long each packet is held")->check(CLI::Range(0, 10000));
  app.add_option("--loss", loss, "probability that a packet is dropped")->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", seed, "seed of the drop decisions");
  CLI11_PARSE(app, argc, argv);

  Queue q;
  q.delay = std::chrono::milliseconds(delay_ms);
  q.lose = std::bernoulli_distribution(loss);
  q.rng.seed(seed);

  nfq_handle* h = nfq_open();
  if (h == nullptr) {
    std::fprintf(stderr, "link_delay: nfq_open failed (root and CONFIG_NETFILTER_NETLINK_QUEUE needed): %s\n",
                 std::strerror(errno));
    return 1;
  }
  q.handle = nfq_create_queue(h, queue_num, &on_packet, &q);
  if (q.handle == nullptr) {
    std::fprintf(stderr, "link_delay: cannot bind queue %u: %s\n", queue_num, std::strerror(errno));
    nfq_close(h);
    return 1;
  }
  // Only the packet ids are needed; the kernel keeps the packets. A deep queue and a large
  // socket buffer: a 50 ms hold of a fast TCP stream is thousands of packets.
  nfq_set_mode(q.handle, NFQNL_COPY_META, 0);
  nfq_set_queue_maxlen(q.handle, 1 << 16);
  nfnl_rcvbufsiz(nfq_nfnlh(h), 32 << 20);
  const int fd = nfq_fd(h);

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::printf("ready\n");
  std::fflush(stdout);

  long long overruns = 0;
  alignas(8) char buf[1 << 16];
  while (!g_stop) {
    pollfd p{fd, POLLIN, 0};
    const int timeout = release_due(q);
    if (::poll(&p, 1, timeout) > 0) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        nfq_handle_packet(h, buf, static_cast<int>(n));
      } else if (n < 0 && errno == ENOBUFS) {
        ++overruns;  // the kernel dropped notifications (and their packets): counted as loss
      }
    }
  }
  for (const auto& p : q.held) nfq_set_verdict(q.handle, p.id, NF_ACCEPT, 0, nullptr);
  nfq_destroy_queue(q.handle);
  nfq_close(h);
  std::printf("link_delay: %lld packets, %lld dropped, %lld overruns, held %d ms\n", q.packets, q.dropped, overruns,
              delay_ms);
  return 0;
}
