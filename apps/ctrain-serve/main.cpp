// ctrain-serve: a trained model behind an HTTP scoring service with dynamic batching.
//   ctrain-serve --model outputs/model.pt [--port 8080]
//   ctrain-serve --model pytorch-birds:latest --registry models --api-key-file key.txt
#include <torch/torch.h>

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <atomic>
#include <thread>

#include "apps/common/cli.h"
#include "apps/common/serving.h"
#include "core/fs.h"
#include "data/decode.h"
#include "serve/server.h"

namespace {

// SIGTERM/SIGINT reach a handler that writes the signal's number to this pipe (core/stop.h); a
// thread reading the pipe stops the server (Server::stop() is not async-signal-safe). A mask
// and sigwait() would not do: OpenBLAS starts its threads before main, with the signals
// unblocked.
int g_signal_pipe[2] = {-1, -1};

std::string read_api_key(const std::string& path) {
  std::string key = ctrain::read_file(path, 4096);  // a key is one line: /dev/zero or a log file is refused
  key.erase(key.find_last_not_of(" \t\r\n") + 1);
  if (key.empty()) throw ctrain::ConfigError("--api-key-file " + path + " is empty");
  if (key.find_first_of(" \t\r\n") != std::string::npos) {
    throw ctrain::ConfigError("--api-key-file " + path + ": the key must be one line without spaces");
  }
  return key;
}

int run(int argc, char** argv) {
  std::string model_arg, registry = "models", device = "cpu", api_key_file;
  int threads = 0;
  ctrain::serve::ServeOptions o;
  CLI::App app{"ctrain-serve: score a trained model over HTTP (POST /score; GET /health, /metadata, /metrics)"};
  app.option_defaults()->always_capture_default();
  app.add_option("--model", model_arg, "a model.pt / checkpoint, or NAME[:VERSION|latest] in --registry")->required();
  app.add_option("--registry", registry, "the model registry folder (ctrain-registry)");
  app.add_option("--device", device, "cpu | cuda[:N]");
  app.add_option("--host", o.host, "address to bind (0.0.0.0: every interface)");
  app.add_option("--port", o.port, "TCP port (0: any free port, printed when ready)");
  o.batcher.max_batch = 0;
  o.batcher.instances = 0;
  app.add_option("--max-batch,--max_batch", o.batcher.max_batch, "inputs per forward of the dynamic batcher (0: 32, or 4 for a ResNet on the CPU)");
  app.add_option("--max-delay-ms,--max_delay_ms", o.batcher.max_delay_ms, "how long the first request of a batch waits for company");
  app.add_option("--max-queue,--max_queue", o.batcher.max_queue, "inputs waiting for a forward beyond which requests get 503");
  app.add_option("--instances", o.batcher.instances, "forwards run side by side, each on its own batch (0: 2 for a ResNet on a CPU with 2+ cores, else 1)");
  app.add_option("--threads", threads, "intra-op CPU threads per forward (0: the cores / --instances)");
  app.add_option("--http-threads,--http_threads", o.http_threads, "requests read or scored at once (503 beyond)");
  app.add_option("--max-connections,--max_connections", o.max_connections, "open connections (one more gets 503 and is closed)");
  app.add_option("--max-body-mb,--max_body_mb", o.max_body_mb, "largest request body in MB (413 beyond)");
  app.add_option("--timeout-s,--timeout_s", o.timeout_s, "seconds a request (head and body) may take to arrive, and an idle connection may stay open");
  app.add_option("--api-key-file,--api_key_file", api_key_file, "require 'Authorization: Bearer <key>' (the file's one line) on every route but /health");
  app.add_flag("--access-log,--access_log", o.access_log, "one stderr line per request");
  if (int code = ctrain::apps::parse_or_exit(app, argc, argv); code >= 0) return code;
  if (threads < 0 || threads > 1024) throw ctrain::ConfigError("--threads must be in 0..1024");
  if (!api_key_file.empty()) o.api_key = read_api_key(api_key_file);
  const torch::Device dev = ctrain::apps::parse_serving_device(device);
  if (o.batcher.max_batch < 0) throw ctrain::ConfigError("--max-batch must be >= 1 (0: automatic)");
  if (o.batcher.instances < 0) throw ctrain::ConfigError("--instances must be >= 1 (0: automatic)");
  ctrain::apps::ServedModel served = ctrain::apps::open_served_model(model_arg, registry);

  // Measured on a 2-core CPU (benchmarks/RESULTS.md): a ResNet runs 2.4x more images/s in
  // batches of 1 than of 32 there, and two single-threaded forwards side by side beat one
  // two-threaded one; the MLP gains from large batches in one instance. On CUDA one
  // instance, large batches.
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const bool conv_on_cpu = dev.is_cpu() && !served.model.spec.is_mlp();
  if (o.batcher.instances == 0) o.batcher.instances = conv_on_cpu ? std::min(2, cores) : 1;
  if (o.batcher.max_batch == 0) o.batcher.max_batch = conv_on_cpu ? 4 : 32;
  if (threads == 0 && dev.is_cpu()) threads = std::max(1, cores / o.batcher.instances);
  if (threads > 0) torch::set_num_threads(threads);
  ctrain::data::use_single_threaded_backend();  // images decode on the connection threads

  o.model_name = served.name;
  ctrain::serve::Handler handler(std::move(served.model), dev);
  ctrain::serve::Server server(handler, o);

  // The server then finishes the requests in flight. A 0 byte from main ends the thread when
  // the server stopped otherwise.
  std::atomic<int> got{0};
  std::thread signals([&] {
    unsigned char b = 0;
    while (::read(g_signal_pipe[0], &b, 1) < 0 && errno == EINTR) {
    }
    if (b != 0) {
      got = b;
      std::fprintf(stderr, "ctrain-serve: %s: no new connections; finishing the requests in flight\n", strsignal(b));
      server.stop();
    }
  });
  std::printf("ctrain-serve: listening on http://%s:%d (model %s, %zu classes)\n", o.host.c_str(), server.port(),
              served.name.c_str(), handler.classes().size());
  std::printf("ctrain-serve: %s, batches of up to %lld (waiting <= %g ms), %d instance(s) x %d thread(s)%s\n",
              dev.str().c_str(), static_cast<long long>(o.batcher.max_batch), o.batcher.max_delay_ms,
              o.batcher.instances, torch::get_num_threads(), o.api_key.empty() ? "" : ", API key required");
  std::fflush(stdout);
  server.serve();
  if (got == 0) {
    const unsigned char zero = 0;
    [[maybe_unused]] ssize_t n = ::write(g_signal_pipe[1], &zero, 1);
  }
  signals.join();
  std::printf("ctrain-serve: stopped%s\n", got ? " after draining" : "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) {
    std::perror("ctrain-serve: pipe");
    return 1;
  }
  ctrain::StopOptions stop;
  stop.second_kills = false;
  stop.notify_fd = g_signal_pipe[1];
  ctrain::install_stop_handlers(stop);
  signal(SIGPIPE, SIG_IGN);  // a client that hangs up mid-answer is the write's error, not ours
  // Every connection is a descriptor: take the hard limit (often 1024 soft, far more hard).
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  return ctrain::apps::guarded_main("ctrain-serve", [&] { return run(argc, argv); });
}
