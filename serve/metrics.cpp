#include "serve/metrics.h"

#include <algorithm>
#include <sstream>

namespace ctrain::serve {
namespace {

std::string number(double v) {
  std::ostringstream s;
  s.precision(10);
  s << v;
  return s.str();
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);  // le: value <= bound
  ++counts_[static_cast<size_t>(it - bounds_.begin())];
  sum_ += value;
  ++count_;
}

std::string Histogram::render(const std::string& name) const {
  std::string out;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
  return out;
}

ServiceMetrics::ServiceMetrics()
    : latency_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
      batch_size_({1, 2, 4, 8, 16, 32, 64, 128, 256}) {}

void ServiceMetrics::count(int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_by_code_[status];
}

void ServiceMetrics::latency(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  latency_.observe(seconds);
}

void ServiceMetrics::batch(int64_t rows) {
  std::lock_guard<std::mutex> lock(mu_);
  batch_size_.observe(static_cast<double>(rows));
}

std::string ServiceMetrics::render(int64_t queued_rows) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out += "# HELP ctrain_requests_total Requests answered, by HTTP status code.\n";
  out += "# TYPE ctrain_requests_total counter\n";
  for (const auto& [code, n] : requests_by_code_) {
    out += "ctrain_requests_total{code=\"" + std::to_string(code) + "\"} " + std::to_string(n) + "\n";
  }
  out += "# HELP ctrain_request_duration_seconds Time from a POST /score's arrival to its answer.\n";
  out += "# TYPE ctrain_request_duration_seconds histogram\n";
  out += latency_.render("ctrain_request_duration_seconds");
  out += "# HELP ctrain_batch_size Inputs per forward of the dynamic batcher.\n";
  out += "# TYPE ctrain_batch_size histogram\n";
  out += batch_size_.render("ctrain_batch_size");
  out += "# HELP ctrain_queue_depth Inputs waiting for a forward.\n";
  out += "# TYPE ctrain_queue_depth gauge\n";
  out += "ctrain_queue_depth " + std::to_string(queued_rows) + "\n";
  return out;
}

}  // namespace ctrain::serve
