// Hostile requests against a real ctrain-serve process, over raw sockets: what an attacker or a
// broken client sends (issue 26: bytes that are not UTF-8, bodies past the limit in every
// encoding, slow and idle clients, header floods, deep JSON, a port taken twice, no threads).
// Waits below are bounds that turn a hang into a failure, never measurements.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/json.h"
#include "tests/serve/serve_fixtures.h"

namespace ctrain::testing {
namespace {

using Clock = std::chrono::steady_clock;

// One TCP connection to 127.0.0.1:port.
class Conn {
 public:
  explicit Conn(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~Conn() {
    if (fd_ >= 0) ::close(fd_);
  }
  Conn(const Conn&) = delete;
  bool connected() const { return connected_; }

  // False once the peer has closed or reset the connection.
  bool send(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // What arrives until the peer closes, a whole response (head + Content-Length body, or a
  // head without one) is in, or `seconds` pass.
  std::string read_response(double seconds) {
    std::string got;
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[65536];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
      const size_t head_end = got.find("\r\n\r\n");
      if (head_end == std::string::npos) continue;
      const size_t cl = got.find("Content-Length: ");
      if (cl == std::string::npos || cl > head_end) break;  // "100 Continue": a head alone
      if (got.size() >= head_end + 4 + std::stoul(got.substr(cl + 16))) break;
    }
    return got;
  }

  // True when the peer closes (EOF or reset) within `seconds`, whatever it sent before.
  bool closed_within(double seconds) {
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      if (::recv(fd_, buf, sizeof(buf), 0) <= 0) return true;
    }
    return false;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

// "HTTP/1.1 404 Not Found..." -> 404; 0 when there is no status line.
int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.", 0) != 0 || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

std::string get(const std::string& target) {
  return "GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n";
}

std::string post(const std::string& target, const std::string& type, const std::string& body,
                 const std::string& extra = "") {
  return "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Type: " + type + "\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n" + extra + "\r\n" + body;
}

// One request on a fresh connection; the whole response.
std::string ask(int port, const std::string& request, double seconds = 30) {
  Conn c(port);
  if (!c.connected() || !c.send(request)) return "";
  return c.read_response(seconds);
}

class HostileHttp : public ::testing::Test {
 protected:
  void SetUp() override { model_ = write_mlp_model(dir_ / "run"); }
  std::unique_ptr<ServeProcess> serve(const std::string& flags = "") {
    auto s = std::make_unique<ServeProcess>("--model " + model_ + " " + flags, dir_ / "serve.log");
    EXPECT_GT(s->port(), 0) << s->log();
    return s;
  }
  bool alive(const ServeProcess& s) { return ::waitpid(s.pid(), nullptr, WNOHANG) == 0; }
  TempDir dir_;
  std::string model_;
};

TEST_F(HostileHttp, PathsThatAreNotUtf8Get404AndTheServiceLivesOn) {
  auto s = serve("--access-log");
  for (const std::string& r : {get("/%FF"), get("/\xFF\xFE"), post("/score%C3", "application/json", "{}"),
                               get("/\xC3\x28?q=\xFF")}) {
    EXPECT_EQ(status_of(ask(s->port(), r)), 404) << r;
    ASSERT_TRUE(alive(*s)) << s->log();
  }
  EXPECT_EQ(status_of(ask(s->port(), get("/health"))), 200);
  EXPECT_EQ(s->stop(), 0) << s->log();
}

TEST_F(HostileHttp, TheBodyLimitHoldsForChunkedAndCompressedBodies) {
  auto s = serve("--max-body-mb 1");
  // 2 MB of JSON in 64 KB chunks, no Content-Length: the limit applies to what arrives.
  std::string chunked = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n";
  const std::string piece(65536, ' ');
  char size_line[32];
  std::snprintf(size_line, sizeof(size_line), "%zx\r\n", piece.size());
  for (int i = 0; i < 32; ++i) chunked += size_line + piece + "\r\n";
  chunked += "0\r\n\r\n";
  EXPECT_EQ(status_of(ask(s->port(), chunked)), 413);
  // A small gzip body could inflate far past the limit: compressed bodies are refused.
  EXPECT_EQ(status_of(ask(s->port(), post("/score", "application/json", std::string(100, 'x'),
                                          "Content-Encoding: gzip\r\n"))),
            415);
  const std::string gzip_chunked = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                   "Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
  EXPECT_EQ(status_of(ask(s->port(), gzip_chunked)), 501);
  EXPECT_EQ(status_of(ask(s->port(), get("/health"))), 200);
}

TEST_F(HostileHttp, IdleAndTricklingClientsLeaveHealthAnswered) {
  // --timeout-s 60: dropping the slow clients does not free the service within the probe's
  // bound; only serving them without a thread each does.
  auto s = serve("--timeout-s 60");
  std::vector<std::unique_ptr<Conn>> idle, trickling;
  for (int i = 0; i < 300; ++i) idle.push_back(std::make_unique<Conn>(s->port()));
  for (int i = 0; i < 130; ++i) {
    trickling.push_back(std::make_unique<Conn>(s->port()));
    trickling.back()->send("POST /score HTTP/1.1\r\n");
  }
  std::atomic<bool> done{false};
  std::thread trickle([&] {
    while (!done) {
      for (auto& c : trickling) c->send("X-Slow: 1\r\n");
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  });
  for (int probe = 0; probe < 3; ++probe) {
    Conn c(s->port());
    ASSERT_TRUE(c.send(get("/health")));
    EXPECT_EQ(status_of(c.read_response(5)), 200) << "probe " << probe;
  }
  done = true;
  trickle.join();
}

TEST_F(HostileHttp, ATricklingClientIsDroppedAtTheTimeoutAndDoesNotHoldUpShutdown) {
  auto s = serve("--timeout-s 2");
  Conn slow(s->port());
  ASSERT_TRUE(slow.send("POST /score HTTP/1.1\r\n"));
  // A header line every 0.3 s for up to 12 s: each byte would reset an idle timer.
  bool dropped = false;
  for (int i = 0; i < 40 && !dropped; ++i) {
    dropped = !slow.send("X-Slow: 1\r\n") || slow.closed_within(0.3);
  }
  EXPECT_TRUE(dropped) << "the server kept a trickling client for 12 s under --timeout-s 2";

  Conn second(s->port());
  ASSERT_TRUE(second.send("POST /score HTTP/1.1\r\n"));
  std::atomic<bool> done{false};
  std::thread trickle([&] {
    while (!done && second.send("X-Slow: 1\r\n")) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  });
  ::kill(s->pid(), SIGTERM);
  // The drain gives a request still arriving at most --timeout-s; the bound here is far above
  // that (a loaded machine), and far below the trickle's forever.
  const bool exited = poll_until([&] { return ::waitpid(s->pid(), nullptr, WNOHANG) != 0; }, 15);
  done = true;
  trickle.join();
  EXPECT_TRUE(exited) << "SIGTERM did not complete with a trickling client connected\n" << s->log();
  if (!exited) ::kill(s->pid(), SIGKILL);
}

TEST_F(HostileHttp, AHeaderFloodIsRefusedBeforeAuthentication) {
  std::ofstream(dir_ / "key") << "s3cret-key\n";
  auto s = serve("--api-key-file " + (dir_ / "key"));
  std::string flood = "GET /metadata HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 200000; ++i) flood += "X-A: b\r\n";
  flood += "\r\n";
  Conn c(s->port());
  c.send(flood);  // the server may close before it all goes out
  EXPECT_EQ(status_of(c.read_response(30)), 431);
  // Many small fields within the byte limit: the count is limited too.
  std::string many = "GET /metadata HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 500; ++i) many += "X: 1\r\n";
  EXPECT_EQ(status_of(ask(s->port(), many + "\r\n")), 431);
  EXPECT_EQ(status_of(ask(s->port(), get("/metadata"))), 401);
  EXPECT_EQ(status_of(ask(s->port(), get("/health"))), 200);
}

TEST_F(HostileHttp, DeeplyNestedJsonIsRefusedBeforeItIsBuilt) {
  auto s = serve();
  const std::string deep = "{\"data\": " + std::string(200000, '[') + std::string(200000, ']') + "}";
  const std::string r = ask(s->port(), post("/score", "application/json", deep));
  EXPECT_EQ(status_of(r), 400) << r.substr(0, 300);
  EXPECT_NE(r.find("nested deeper than"), std::string::npos) << r.substr(0, 300);
  EXPECT_TRUE(alive(*s));
}

TEST_F(HostileHttp, TextThatIsNotUtf8GetsAClientErrorNot500) {
  auto s = serve();
  EXPECT_EQ(status_of(ask(s->port(), post("/score", "application/json", "{\"data\": \"\xFF\xFE\"}"))), 400);
  EXPECT_EQ(status_of(ask(s->port(), post("/score", "application/\xFF", "{}"))), 415);
  EXPECT_EQ(status_of(ask(s->port(), post("/score", "application/json", "{\"data\": [1e999]}"))), 400);
}

TEST_F(HostileHttp, TheAccessLogCannotBeForged) {
  auto s = serve("--access-log");
  ask(s->port(), get("/x%0aFORGED%20line"));
  ask(s->port(), get("/y%0d%0aFORGED"));
  ASSERT_EQ(s->stop(), 0);
  const std::string log = s->log();
  EXPECT_EQ(log.find("\nFORGED"), std::string::npos) << log;
  EXPECT_NE(log.find("%0aFORGED"), std::string::npos) << log;
}

TEST_F(HostileHttp, ASecondServiceCannotTakeTheSamePort) {
  auto s = serve();
  const auto r = run_command("timeout 60 " + bin("ctrain-serve") + " --model " + model_ + " --port " +
                             std::to_string(s->port()));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "the second service kept running: " << r.output;
  EXPECT_NE(r.output.find("cannot listen on 127.0.0.1:" + std::to_string(s->port())), std::string::npos) << r.output;
  EXPECT_EQ(status_of(ask(s->port(), get("/health"))), 200);
}

TEST_F(HostileHttp, NoThreadsToStartIsAnErrorNotAHang) {
  // RLIMIT_NPROC binds unprivileged users only: run as nobody under a limit of 40 threads.
  if (::geteuid() != 0 || run_command("command -v setpriv && command -v prlimit").exit_code != 0) {
    GTEST_SKIP() << "needs root, setpriv and prlimit (util-linux) to run the service as nobody under ulimit -u";
  }
  fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                   fs::perms::others_read | fs::perms::others_exec);
  fs::permissions(dir_.path() / "run", fs::perms::owner_all | fs::perms::others_read | fs::perms::others_exec);
  fs::permissions(model_, fs::perms::owner_read | fs::perms::owner_write | fs::perms::others_read);
  const auto r = run_command("timeout -s KILL 60 setpriv --reuid=65534 --regid=65534 --clear-groups prlimit --nproc=40 -- " +
                             bin("ctrain-serve") + " --model " + model_ + " --port 0 --instances 60");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 137) << "hung without its threads: " << r.output;
  EXPECT_LT(r.exit_code, 128) << "crashed: " << r.output;
  EXPECT_NE(r.output.find("cannot start"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("listening"), std::string::npos) << r.output;
}

TEST_F(HostileHttp, ConnectionsBeyondTheCapAreRefusedClearly) {
  auto s = serve("--max-connections 8");
  std::vector<std::unique_ptr<Conn>> held;
  for (int i = 0; i < 8; ++i) held.push_back(std::make_unique<Conn>(s->port()));
  // The service accepts asynchronously: wait until it counts the 8 (the 9th is then refused).
  std::string refused;
  poll_until([&] {
    refused = ask(s->port(), get("/health"), 2);
    return status_of(refused) == 503;
  }, 20);
  EXPECT_EQ(status_of(refused), 503) << refused;
  EXPECT_NE(refused.find("--max-connections"), std::string::npos) << refused;
  held.clear();
  EXPECT_TRUE(poll_until([&] { return status_of(ask(s->port(), get("/health"), 2)) == 200; }, 20));
}

TEST_F(HostileHttp, AChunkSizeLineOrTrailerThatNeverEndsIsCutOff) {
  auto s = serve();
  const std::string head = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n";
  // A chunk extension of 8 MB, then a trailer field of 8 MB: Beast bounds neither by itself.
  for (const std::string& tail : {"1;" + std::string(8 << 20, 'a'), "0\r\nX-T: " + std::string(8 << 20, 'b')}) {
    Conn c(s->port());
    c.send(head + tail);  // the server may stop reading before it all goes out
    EXPECT_EQ(status_of(c.read_response(30)), 400);
  }
  EXPECT_EQ(status_of(ask(s->port(), get("/health"))), 200);
}

TEST_F(HostileHttp, RefusalsReachAClientThatIsStillSending) {
  std::ofstream(dir_ / "key") << "s3cret-key\n";
  auto s = serve("--max-body-mb 1 --api-key-file " + (dir_ / "key"));
  // A declared size over the limit is not news to give a client without the key.
  const std::string big(3 << 20, ' ');
  EXPECT_EQ(status_of(ask(s->port(), post("/score", "application/json", big))), 401);
  // With the key: 413, read by a client that sent its whole 3 MB body before reading.
  EXPECT_EQ(status_of(ask(s->port(), post("/score", "application/json", big, "Authorization: Bearer s3cret-key\r\n"))), 413);
}

TEST_F(HostileHttp, ExpectContinueGetsItsInterimAnswer) {
  auto s = serve();
  const std::string body = json_body(torch::rand({1, 784}));
  Conn c(s->port());
  ASSERT_TRUE(c.send("POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
                     "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n"));
  EXPECT_EQ(status_of(c.read_response(10)), 100);
  ASSERT_TRUE(c.send(body));
  EXPECT_EQ(status_of(c.read_response(30)), 200);
}

// core/json.h, the layer every outside text goes through.
TEST(HostileJson, TextThatIsNotUtf8PrintsAndDeepNestingIsRefusedUnbuilt) {
  EXPECT_EQ(json_dump(nlohmann::json{{"path", "/\xFF"}}), "{\"path\":\"/\xEF\xBF\xBD\"}");
  EXPECT_THROW(nlohmann::json({{"path", "/\xFF"}}).dump(), nlohmann::json::type_error);  // why it exists
  EXPECT_TRUE(is_utf8("caf\xC3\xA9"));
  for (const char* bad : {"\xFF", "\xC3", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80"}) {
    EXPECT_FALSE(is_utf8(bad)) << bad;  // stray, cut, overlong, surrogate, past U+10FFFF
  }
  EXPECT_EQ(printable("a\nb\x1B"), "a\\x0Ab\\x1B");
  EXPECT_EQ(json_depth("[[\"[[[\"], {\"a\": [1]}]"), 3u);  // brackets in strings do not count
  EXPECT_EQ(json_parse("[[1]]", "x").size(), 1u);
  try {
    json_parse(std::string(100, '[') + std::string(100, ']'), "the request body");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the request body: JSON nested deeper than 64"), std::string::npos) << e.what();
  }
  EXPECT_THROW(json_parse("{\"a\": \"\xFF\"}", "x"), Error);
}

}  // namespace
}  // namespace ctrain::testing
