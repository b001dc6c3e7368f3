#pragma once
// The dynamic batcher between the HTTP layer and the model, as Triton's and TorchServe's:
// requests from many connections are stacked into one forward of up to `max_batch` rows,
// waiting at most `max_delay_ms` after the first for company. It waits only while a request is
// known to be on its way (announced with expect()): a lone client is answered at once, not
// after max_delay_ms, and a crowd still fills its batches. `instances` threads (Triton's
// instance count) take batches from the one queue and run forwards side by side: on a CPU a
// convolutional net runs faster per image in two single-threaded batch-1 forwards than in
// one large two-threaded one (benchmarks/RESULTS.md), so concurrency is a setting.
#include <torch/torch.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"

namespace ctrain::serve {

// The queue holds `max_queue` rows already: HTTP 503 with Retry-After.
class QueueFull : public Error {
 public:
  using Error::Error;
};

struct BatcherOptions {
  int64_t max_batch = 32;      // rows per forward (a larger single request runs alone)
  double max_delay_ms = 5.0;   // wait after the first queued request
  int64_t max_queue = 1024;    // rows waiting, beyond which submit() refuses
  int instances = 1;           // threads running forwards concurrently
};

class DynamicBatcher {
 public:
  // rows [N, ...] -> per-row outputs [N, ...], called from `instances` threads at once.
  // `on_batch(rows)` is told each forward's size (also from those threads).
  using Infer = std::function<torch::Tensor(const torch::Tensor&)>;
  DynamicBatcher(Infer infer, BatcherOptions options, std::function<void(int64_t)> on_batch = {});
  // Finishes every request already queued, then joins the workers.
  ~DynamicBatcher();
  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // A request on its way (being read and parsed) until submit() takes it or it is destroyed.
  class Arrival {
   public:
    explicit Arrival(DynamicBatcher* b) : b_(b) {}
    Arrival(Arrival&& o) noexcept : b_(o.b_) { o.b_ = nullptr; }
    Arrival(const Arrival&) = delete;
    Arrival& operator=(const Arrival&) = delete;
    Arrival& operator=(Arrival&&) = delete;
    ~Arrival() {
      if (b_) b_->arrived();
    }

   private:
    friend class DynamicBatcher;
    DynamicBatcher* b_;
  };
  Arrival expect();

  // Called once per request with its outputs, or with the error that failed it (a failed
  // forward fails every request of its batch; shutdown fails what is queued). Runs on a
  // forward thread: it should hand the result on, not work.
  using Done = std::function<void(torch::Tensor outputs, std::exception_ptr error)>;

  // Queues `rows` ([N, ...], N >= 1); `done` gets their outputs, in order. Throws QueueFull
  // (and then never calls `done`). `arrival`, if given, ends here.
  void submit(torch::Tensor rows, Arrival* arrival, Done done);
  // The same, as a future.
  std::future<torch::Tensor> submit(torch::Tensor rows, Arrival* arrival = nullptr);

  int64_t queued_rows() const;

  // Shutdown past its deadline: every request still queued fails with QueueFull ("shutting
  // down"), and new ones are refused; forwards already running finish. The destructor then
  // returns as soon as those do.
  void abandon();

 private:
  struct Request {
    torch::Tensor rows;
    Done done;
  };
  void run();
  void arrived();  // an expected arrival gave up before submit()

  Infer infer_;
  BatcherOptions options_;
  std::function<void(int64_t)> on_batch_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> queue_;
  int64_t queued_rows_ = 0;
  int64_t arriving_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace ctrain::serve
