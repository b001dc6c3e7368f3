#include "serve/batcher.h"

#include <system_error>

namespace ctrain::serve {

DynamicBatcher::DynamicBatcher(Infer infer, BatcherOptions options, std::function<void(int64_t)> on_batch)
    : infer_(std::move(infer)), options_(options), on_batch_(std::move(on_batch)) {
  if (options_.max_batch < 1 || options_.max_batch > 65536) throw ConfigError("--max-batch must be in 1..65536");
  if (!(options_.max_delay_ms >= 0 && options_.max_delay_ms <= 60000)) {
    throw ConfigError("--max-delay-ms must be in 0..60000");
  }
  if (options_.max_queue < 1 || options_.max_queue > (int64_t{1} << 24)) throw ConfigError("--max-queue must be in 1..16777216");
  if (options_.instances < 1 || options_.instances > 64) throw ConfigError("--instances must be in 1..64");
  workers_.reserve(static_cast<size_t>(options_.instances));  // emplace_back then throws only system_error
  try {
    for (int i = 0; i < options_.instances; ++i) workers_.emplace_back([this] { run(); });
  } catch (const std::system_error& e) {
    // The threads that did start are stopped and joined: a joinable std::thread destroyed by
    // the unwinding would terminate the process.
    const size_t started = workers_.size();
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    throw Error("cannot start the batcher's threads (" + std::to_string(started) + " of " +
                    std::to_string(options_.instances) + " started): " + e.what(),
                "lower --instances, or raise the limit on threads (ulimit -u, a container's pids limit)");
  }
}

DynamicBatcher::~DynamicBatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& w : workers_) w.join();
}

DynamicBatcher::Arrival DynamicBatcher::expect() {
  std::lock_guard<std::mutex> lock(mu_);
  ++arriving_;
  return Arrival(this);
}

void DynamicBatcher::arrived() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    --arriving_;
  }
  cv_.notify_all();
}

std::future<torch::Tensor> DynamicBatcher::submit(torch::Tensor rows, Arrival* arrival) {
  auto promise = std::make_shared<std::promise<torch::Tensor>>();
  auto future = promise->get_future();
  submit(std::move(rows), arrival, [promise](torch::Tensor out, std::exception_ptr error) {
    if (error) {
      promise->set_exception(error);
    } else {
      promise->set_value(std::move(out));
    }
  });
  return future;
}

void DynamicBatcher::submit(torch::Tensor rows, Arrival* arrival, Done done) {
  Request r{std::move(rows), std::move(done)};
  const int64_t n = r.rows.size(0);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (arrival && arrival->b_ == this) {
      --arriving_;  // with the push, under one lock: the worker never sees it twice or not at all
      arrival->b_ = nullptr;
    }
    if (stopping_) throw QueueFull("the service is shutting down");
    if (queued_rows_ > 0 && queued_rows_ + n > options_.max_queue) {
      throw QueueFull(std::to_string(queued_rows_) + " inputs are queued (--max-queue " +
                      std::to_string(options_.max_queue) + ")");
    }
    queued_rows_ += n;
    queue_.push_back(std::move(r));
  }
  cv_.notify_all();
}

void DynamicBatcher::abandon() {
  std::deque<Request> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    dropped.swap(queue_);
    queued_rows_ = 0;
  }
  cv_.notify_all();
  const auto error = std::make_exception_ptr(QueueFull("the service is shutting down"));
  for (Request& r : dropped) r.done({}, error);
}

int64_t DynamicBatcher::queued_rows() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_rows_;
}

void DynamicBatcher::run() {
  using Clock = std::chrono::steady_clock;
  const auto max_delay = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double, std::milli>(options_.max_delay_ms));
  for (;;) {
    std::vector<Request> batch;
    int64_t rows = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued has been answered
      // Gather until the batch is full or the first request has waited max_delay. Requests
      // are never split, and a request that would overflow the batch waits for the next one.
      const auto deadline = Clock::now() + max_delay;
      for (;;) {
        while (!queue_.empty() && (batch.empty() || rows + queue_.front().rows.size(0) <= options_.max_batch)) {
          rows += queue_.front().rows.size(0);
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
        if (rows >= options_.max_batch || !queue_.empty() || stopping_ || arriving_ == 0) break;
        if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
          if (queue_.empty()) break;
        }
      }
      queued_rows_ -= rows;
    }
    torch::Tensor out;
    std::exception_ptr error;
    try {
      std::vector<torch::Tensor> inputs;
      inputs.reserve(batch.size());
      for (auto& r : batch) inputs.push_back(r.rows);
      out = infer_(inputs.size() == 1 ? inputs[0] : torch::cat(inputs, 0));
      if (out.dim() == 0 || out.size(0) != rows) {
        throw Error("the model returned " + std::to_string(out.dim() ? out.size(0) : 0) + " rows for " +
                    std::to_string(rows) + " inputs");
      }
      if (on_batch_) on_batch_(rows);
    } catch (...) {
      error = std::current_exception();
    }
    // Each request told once, outside the try: a callback's own failure is not the forward's.
    int64_t at = 0;
    for (auto& r : batch) {
      const int64_t n = r.rows.size(0);
      try {
        r.done(error ? torch::Tensor() : out.narrow(0, at, n), error);
      } catch (...) {
      }
      at += n;
    }
  }
}

}  // namespace ctrain::serve
