#pragma once
// The service's counters in Prometheus' text exposition format (version 0.0.4). Debian 12 has
// no Prometheus client library for C++; the format is a few lines of text per series, so it
// is written here.
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace ctrain::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // The _bucket (cumulative, ending with le="+Inf"), _sum and _count lines of `name`.
  std::string render(const std::string& name) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last = above every bound
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

class ServiceMetrics {
 public:
  ServiceMetrics();
  void count(int status);        // one answered request, whatever its route
  void latency(double seconds);  // one POST /score, arrival to answer
  void batch(int64_t rows);                  // one forward
  // The whole /metrics page; `queued_rows` is the batcher's queue depth now.
  std::string render(int64_t queued_rows) const;

 private:
  mutable std::mutex mu_;
  std::map<int, uint64_t> requests_by_code_;
  Histogram latency_;
  Histogram batch_size_;
};

}  // namespace ctrain::serve
