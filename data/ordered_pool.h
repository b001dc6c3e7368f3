#pragma once
// Worker threads that build the items of an epoch (batches) in any order and hand them out in
// order, at most `window` ahead of the consumer: the loaders' one piece of concurrency
// (ImageFolderSource's decode workers, GpuImageFolderSource's file readers). Written here
// because LibTorch's C++ DataLoader delivers out of order or not at all ahead with several
// workers, and ordered delivery is what makes a run's batches independent of --workers.
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace ctrain::data {

// T: the item (a batch). Ctx: what an epoch's items are built from (its number, its sample
// order), copied to a worker with each claim, so start() may replace it while items of the
// previous epoch are still being built (they are dropped).
template <typename T, typename Ctx>
class OrderedPool {
 public:
  using Build = std::function<T(const Ctx&, int64_t index)>;

  // workers == 0: next() builds each item itself, on the caller's thread.
  OrderedPool(int workers, int window, Build build) : workers_(workers), window_(window), build_(std::move(build)) {}

  ~OrderedPool() {
    stop();
    for (auto& t : threads_) t.join();
  }

  // Ends the work: workers stop after their current item, and a next() waiting returns nullopt.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
  }

  OrderedPool(const OrderedPool&) = delete;
  OrderedPool& operator=(const OrderedPool&) = delete;

  // Begins items [0, count) of `ctx`, dropping whatever was built or in flight. Returns the
  // epoch's generation, for next(generation).
  uint64_t start(Ctx ctx, int64_t count) {
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++generation_;
      ctx_ = std::move(ctx);
      count_ = count;
      next_claim_ = next_deliver_ = 0;
      ready_.clear();
      failed_.clear();
      started_ = true;
      gen = generation_;
    }
    if (threads_.empty()) {
      for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { work(); });
    }
    cv_.notify_all();
    return gen;
  }

  bool started() const {
    std::lock_guard<std::mutex> lock(mu_);
    return started_;
  }

  // The next item in order, nullopt after the last; an item whose build threw rethrows here.
  // With `generation` (from start()), also nullopt once a later start() or stop() superseded
  // it: for a consumer on another thread than the one calling start().
  std::optional<T> next(std::optional<uint64_t> generation = std::nullopt) {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t gen = generation.value_or(generation_);
    if (stop_ || gen != generation_ || next_deliver_ >= count_) return std::nullopt;
    const int64_t i = next_deliver_;
    if (workers_ == 0) {
      ++next_deliver_;
      const Ctx ctx = ctx_;
      lock.unlock();
      return build_(ctx, i);
    }
    cv_.wait(lock, [&] { return stop_ || gen != generation_ || ready_.count(i) || failed_.count(i); });
    if (stop_ || gen != generation_) return std::nullopt;
    if (auto f = failed_.find(i); f != failed_.end()) std::rethrow_exception(f->second);
    T item = std::move(ready_.at(i));
    ready_.erase(i);
    ++next_deliver_;
    lock.unlock();
    cv_.notify_all();
    return item;
  }

 private:
  void work() {
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || (next_claim_ < count_ && next_claim_ < next_deliver_ + window_); });
      if (stop_) return;
      const int64_t i = next_claim_++;
      const uint64_t gen = generation_;
      const Ctx ctx = ctx_;
      lock.unlock();
      std::optional<T> item;
      std::exception_ptr err;
      try {
        item.emplace(build_(ctx, i));
      } catch (...) {
        err = std::current_exception();
      }
      lock.lock();
      if (gen != generation_) continue;  // start() was called meanwhile: drop it
      if (err) {
        failed_[i] = err;
      } else {
        ready_.emplace(i, std::move(*item));
      }
      cv_.notify_all();
    }
  }

  const int workers_, window_;
  const Build build_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  bool stop_ = false, started_ = false;
  uint64_t generation_ = 0;
  Ctx ctx_{};
  int64_t count_ = 0, next_claim_ = 0, next_deliver_ = 0;
  std::map<int64_t, T> ready_;
  std::map<int64_t, std::exception_ptr> failed_;
};

}  // namespace ctrain::data
