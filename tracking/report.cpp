#include "tracking/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"

namespace ctrain::tracking {
namespace {

namespace fs = std::filesystem;

// Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
const char* kColours[] = {"#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"};

std::string num(double v, int digits = 4) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*g", digits, v);
  return buf;
}

// "Nice" axis ticks (1, 2, 5 x 10^k steps) covering [lo, hi], at most 4 * want + 1 of them.
// `integers`: steps of at least 1 (epochs). Values come from files (an epoch of 1e17), so the
// ticks are counted, never found by adding a step until hi: at 1e17, v + 1 == v. No ticks for
// a range that is not finite or too narrow to show apart at double precision.
std::vector<double> ticks(double lo, double hi, int want = 5, bool integers = false) {
  std::vector<double> t;
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(hi > lo) || !std::isfinite(hi - lo)) return t;
  const double raw = (hi - lo) / want;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  if (!(mag > 0) || !std::isfinite(mag)) return t;
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  }
  if (integers) step = std::max(1.0, std::round(step));
  const double first = std::ceil(lo / step) * step;
  for (int i = 0; i <= 4 * want; ++i) {
    const double v = first + i * step;
    if (!(v <= hi + step * 1e-9)) break;
    if (t.empty() || v > t.back()) t.push_back(v);  // steps below hi's precision add nothing
  }
  return t;
}

struct Frame {
  double x0, x1, y0, y1;
  int w, h, left = 56, right = 12, top = 28, bottom = 40;
  bool integer_x = false;
  double px(double x) const { return left + (x - x0) / (x1 - x0) * (w - left - right); }
  double py(double y) const { return h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom); }
};

Frame frame_for(const std::vector<std::pair<double, double>>& pts, int w, int h) {
  Frame f{0, 1, 0, 1, w, h};
  if (pts.empty()) return f;
  f.x0 = f.y0 = std::numeric_limits<double>::infinity();
  f.x1 = f.y1 = -std::numeric_limits<double>::infinity();
  for (const auto& [x, y] : pts) {
    if (!std::isfinite(x) || !std::isfinite(y)) continue;
    f.x0 = std::min(f.x0, x), f.x1 = std::max(f.x1, x);
    f.y0 = std::min(f.y0, y), f.y1 = std::max(f.y1, y);
  }
  if (!std::isfinite(f.x0)) return Frame{0, 1, 0, 1, w, h};
  f.integer_x = std::all_of(pts.begin(), pts.end(), [](const auto& p) { return p.first == std::floor(p.first); });
  // One x value: widen by half an epoch, or relatively where 0.5 is below its precision (1e17).
  if (f.x1 == f.x0) {
    const double half = std::max(0.5, std::abs(f.x0) * 1e-6);
    f.x0 -= half, f.x1 += half;
  }
  const double pad = f.y1 > f.y0 ? (f.y1 - f.y0) * 0.05 : std::max(1e-3, std::abs(f.y0) * 0.05);
  f.y0 -= pad, f.y1 += pad;
  // Spans beyond double (-1e308 .. 1e308) cannot be scaled: such a chart shows no axes.
  if (!std::isfinite(f.x1 - f.x0) || !(f.x1 > f.x0)) f.x0 = 0, f.x1 = 1;
  if (!std::isfinite(f.y1 - f.y0) || !(f.y1 > f.y0)) f.y0 = 0, f.y1 = 1;
  return f;
}

std::string axes(const Frame& f, const std::string& title, const std::string& x_label,
                 const std::string& y_label) {
  std::ostringstream o;
  o << "<text x='" << f.w / 2 << "' y='16' text-anchor='middle' class='title'>" << html_escape(title) << "</text>";
  for (double t : ticks(f.y0, f.y1)) {
    if (t < f.y0 || t > f.y1) continue;
    o << "<line x1='" << f.left << "' x2='" << f.w - f.right << "' y1='" << f.py(t) << "' y2='" << f.py(t)
      << "' class='grid'/><text x='" << f.left - 4 << "' y='" << f.py(t) + 4
      << "' text-anchor='end' class='tick'>" << num(t, 3) << "</text>";
  }
  for (double t : ticks(f.x0, f.x1, 6, f.integer_x)) {
    if (t < f.x0 || t > f.x1) continue;
    o << "<text x='" << f.px(t) << "' y='" << f.h - f.bottom + 14 << "' text-anchor='middle' class='tick'>"
      << num(t, 4) << "</text>";
  }
  o << "<rect x='" << f.left << "' y='" << f.top << "' width='" << f.w - f.left - f.right << "' height='"
    << f.h - f.top - f.bottom << "' class='box'/>";
  o << "<text x='" << (f.left + f.w - f.right) / 2 << "' y='" << f.h - 6 << "' text-anchor='middle' class='label'>"
    << html_escape(x_label) << "</text>";
  if (!y_label.empty()) {
    o << "<text transform='translate(12," << (f.top + f.h - f.bottom) / 2
      << ") rotate(-90)' text-anchor='middle' class='label'>" << html_escape(y_label) << "</text>";
  }
  return o.str();
}

double get(const nlohmann::json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : std::nan("");
}

// A value from a file as page text: strings as they are, anything else as JSON.
std::string text_of(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : json_dump(v); }

// j[key] as page text, "" when absent.
std::string field(const nlohmann::json& j, const char* key) {
  return j.is_object() && j.contains(key) ? text_of(j[key]) : "";
}

// The lines a reader left out, as a note under the charts.
std::string skipped_note(const std::vector<std::string>& skipped) {
  if (skipped.empty()) return "";
  std::string o = "<p class='stopped'>" + std::to_string(skipped.size()) + " malformed line(s) left out:";
  for (size_t i = 0; i < skipped.size() && i < 20; ++i) o += "<br>" + html_escape(skipped[i]);
  if (skipped.size() > 20) o += "<br>...";
  return o + "</p>";
}

std::string flat_rows(const nlohmann::json& j, const std::string& prefix = "") {
  std::string rows;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (it->is_object()) {
      rows += flat_rows(*it, key);
    } else {
      rows += "<tr><td>" + html_escape(key) + "</td><td>" + html_escape(text_of(*it)) + "</td></tr>";
    }
  }
  return rows;
}

const char* kStyle =
    "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}"
    "h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
    ".charts{display:flex;flex-wrap:wrap;gap:16px}svg{background:#fff;border:1px solid #ddd}"
    ".title{font-size:13px;font-weight:600}.tick{font-size:10px;fill:#555}.label{font-size:11px;fill:#333}"
    ".charts{margin-top:16px}.grid{stroke:#eee}.box{fill:none;stroke:#999}.stopped{color:#a33}.missing{color:#999}</style>";

// The folder's own name, for a page title ("outputs/" and "outputs" alike).
std::string dir_name(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

std::string page(const std::string& title, const std::string& body) {
  return "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>" + html_escape(title) +
         "</title>" + kStyle + "</head><body><h1>" + html_escape(title) + "</h1>" + body + "</body></html>\n";
}

}  // namespace

std::string html_escape(const std::string& text) {
  const std::string s = is_utf8(text) ? text : printable(text);
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string svg_line_chart(const std::string& title, const std::string& x_label,
                           const std::vector<Series>& series, int width, int height) {
  std::vector<std::pair<double, double>> all;
  for (const auto& s : series) all.insert(all.end(), s.points.begin(), s.points.end());
  Frame f = frame_for(all, width, height);
  const bool legend = series.size() > 1 && series.size() <= 12;
  if (legend) f.right = 96;  // the legend sits right of the plot, never over a curve
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height << "' role='img'>"
    << axes(f, title, x_label, "");
  for (size_t i = 0; i < series.size(); ++i) {
    const char* colour = kColours[i % 8];
    std::string d;
    for (const auto& [x, y] : series[i].points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      d += (d.empty() ? "M" : " L") + num(f.px(x), 6) + "," + num(f.py(y), 6);
    }
    o << "<path d='" << d << "' fill='none' stroke='" << colour << "' stroke-width='1.8'/>";
    if (series[i].points.size() <= 60) {
      for (const auto& [x, y] : series[i].points) {
        if (std::isfinite(x) && std::isfinite(y)) {
          o << "<circle cx='" << f.px(x) << "' cy='" << f.py(y) << "' r='2.5' fill='" << colour << "'/>";
        }
      }
    }
    if (legend) {
      const int y = f.top + 8 + static_cast<int>(i) * 14;
      o << "<rect x='" << width - f.right + 8 << "' y='" << y - 4 << "' width='10' height='3' fill='" << colour
        << "'/><text x='" << width - f.right + 22 << "' y='" << y << "' class='tick'>"
        << html_escape(series[i].name) << "</text>";
    }
  }
  o << "</svg>";
  return o.str();
}

std::string svg_scatter(const std::string& title, const std::string& x_label, const std::string& y_label,
                        const std::vector<std::pair<double, double>>& points, int width, int height) {
  const Frame f = frame_for(points, width, height);
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height << "' role='img'>"
    << axes(f, title, x_label, y_label);
  for (const auto& [x, y] : points) {
    if (std::isfinite(x) && std::isfinite(y)) {
      o << "<circle cx='" << f.px(x) << "' cy='" << f.py(y) << "' r='4' fill='" << kColours[0]
        << "' fill-opacity='0.7'/>";
    }
  }
  o << "</svg>";
  return o.str();
}

std::string write_run_report(const std::string& run_dir, const nlohmann::json& config) {
  std::vector<std::string> skipped;
  const auto epochs = read_jsonl((fs::path(run_dir) / "metrics.jsonl").string(), /*allow_torn_last_line=*/true, &skipped);
  Series train_loss{"train", {}}, val_loss{"val", {}}, train_acc{"train", {}}, val_acc{"val", {}}, secs{"seconds", {}};
  double best = -1, total = 0;
  int64_t best_epoch = -1;
  for (const auto& e : epochs) {
    const double x = get(e, "epoch");
    train_loss.points.emplace_back(x, get(e, "train_loss"));
    val_loss.points.emplace_back(x, get(e, "val_loss"));
    train_acc.points.emplace_back(x, get(e, "training_acc"));
    val_acc.points.emplace_back(x, get(e, "validation_acc"));
    secs.points.emplace_back(x, get(e, "seconds"));
    if (get(e, "validation_acc") > best && std::abs(x) < 9e18) {  // an epoch of 1e300 is no int64_t
      best = get(e, "validation_acc"), best_epoch = static_cast<int64_t>(x);
    }
    if (std::isfinite(get(e, "seconds"))) total += get(e, "seconds");
  }
  std::ostringstream b;
  b << "<table><tr><th>epochs</th><th>final val acc</th><th>final val loss</th><th>best val acc</th>"
       "<th>best epoch</th><th>training time</th><th>mean s/epoch</th></tr><tr>";
  if (epochs.empty()) {
    b << "<td colspan='7'>no epoch finished yet</td>";
  } else {
    const auto& last = epochs.back();
    b << "<td>" << epochs.size() << "</td><td>" << num(get(last, "validation_acc")) << "</td><td>"
      << num(get(last, "val_loss")) << "</td><td>" << num(best) << "</td><td>" << best_epoch << "</td><td>"
      << num(total, 5) << " s</td><td>" << num(total / static_cast<double>(epochs.size())) << "</td>";
  }
  b << "</tr></table><div class='charts'>" << svg_line_chart("loss", "epoch", {train_loss, val_loss})
    << svg_line_chart("accuracy", "epoch", {train_acc, val_acc})
    << svg_line_chart("seconds per epoch (training)", "epoch", {secs}) << "</div>" << skipped_note(skipped);
  b << "<h2>Files</h2><table>";
  std::vector<std::string> files = {"model.pt", "model.onnx", "metrics.jsonl", "checkpoints"};
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("events.out.tfevents.", 0) == 0) files.push_back(name);
  }
  for (const auto& name : files) {
    const fs::path p = fs::path(run_dir) / name;
    const bool there = fs::exists(p, ec);
    b << "<tr><td>" << html_escape(name) << "</td><td" << (there ? ">" : " class='missing'>")
      << html_escape(there ? fs::absolute(p, ec).string() : "not written") << "</td></tr>";
  }
  b << "</table><h2>Configuration</h2><table>" << flat_rows(config) << "</table>";
  const std::string path = (fs::path(run_dir) / "report.html").string();
  write_file_atomic(path, page("ctrain run: " + dir_name(run_dir), b.str()));
  return path;
}

std::string write_sweep_report(const std::string& sweep_dir, const std::string& metric,
                               const std::string& goal) {
  if (goal != "maximize" && goal != "minimize") {
    throw ConfigError("--goal must be maximize or minimize, got '" + goal + "'");
  }
  std::vector<std::string> skipped;
  auto trials = read_jsonl((fs::path(sweep_dir) / "sweep.jsonl").string(), /*allow_torn_last_line=*/true, &skipped);
  const bool maximize = goal == "maximize";
  auto metric_of = [](const nlohmann::json& t) {
    const double v = get(t, "best_metric");
    return std::isfinite(v) ? v : std::nan("");
  };
  std::stable_sort(trials.begin(), trials.end(), [&](const nlohmann::json& a, const nlohmann::json& b) {
    const double x = metric_of(a), y = metric_of(b);
    if (std::isnan(x) != std::isnan(y)) return std::isnan(y);  // trials without a value last
    return maximize ? x > y : x < y;
  });
  // Every trial's curve of `metric` per epoch, from its own metrics.jsonl.
  std::vector<Series> curves;
  std::map<std::string, std::vector<std::pair<double, double>>> by_param;
  std::ostringstream rows;
  std::set<std::string> names;
  for (const auto& t : trials) {
    if (t.contains("params") && t["params"].is_object()) {
      for (auto it = t["params"].begin(); it != t["params"].end(); ++it) names.insert(it.key());
    }
  }
  for (const auto& t : trials) {
    // Every value below comes from a file: escaped, and read without assuming its type.
    const std::string id = t.contains("trial") ? text_of(t["trial"]) : "?";
    Series s{"trial " + id, {}};
    if (t.contains("trial") && t["trial"].is_number_integer() && t["trial"].get<int64_t>() >= 0 &&
        t["trial"].get<int64_t>() < 1000000000) {
      char dir[32];
      std::snprintf(dir, sizeof(dir), "%03lld", static_cast<long long>(t["trial"].get<int64_t>()));
      const fs::path m = fs::path(sweep_dir) / "trials" / dir / "metrics.jsonl";
      std::error_code ec;
      if (fs::exists(m, ec)) {
        try {
          for (const auto& e : read_jsonl(m.string(), true, &skipped)) s.points.emplace_back(get(e, "epoch"), get(e, metric.c_str()));
        } catch (const Error& e) {
          skipped.push_back(e.what());  // not a regular file, too big: the trial's row stays
        }
      }
    }
    curves.push_back(std::move(s));
    const std::string status = field(t, "status");
    rows << "<tr" << (status == "early_terminated" ? " class='stopped'" : "") << "><td>" << html_escape(id)
         << "</td><td>" << html_escape(status == "early_terminated" ? "early terminated" : status) << "</td><td>"
         << num(metric_of(t)) << "</td><td>" << html_escape(field(t, "epochs_run")) << "</td><td>"
         << num(get(t, "seconds"), 4) << "</td>";
    const nlohmann::json p = t.contains("params") && t["params"].is_object() ? t["params"] : nlohmann::json::object();
    for (const auto& n : names) {
      std::string v;
      if (p.contains(n)) v = p[n].is_number() ? num(p[n].get<double>(), 5) : text_of(p[n]);
      rows << "<td>" << html_escape(v) << "</td>";
      if (p.contains(n) && p[n].is_number()) by_param[n].emplace_back(p[n].get<double>(), metric_of(t));
    }
    rows << "</tr>";
  }
  std::ostringstream b;
  b << "<p>" << trials.size() << " trials; metric <b>" << html_escape(metric) << "</b> (" << html_escape(goal)
    << "), best first. Early-terminated trials are marked in red.</p><div class='charts'>"
    << svg_line_chart(metric + " per epoch, every trial", "epoch", curves, 720, 360) << "</div>"
    << skipped_note(skipped);
  b << "<h2>Trials</h2><table><tr><th>trial</th><th>status</th><th>best " << html_escape(metric)
    << "</th><th>epochs</th><th>seconds</th>";
  for (const auto& n : names) b << "<th>" << html_escape(n) << "</th>";
  b << "</tr>" << rows.str() << "</table>";
  if (!by_param.empty()) {
    b << "<h2>Parameters against " << html_escape(metric) << "</h2><div class='charts'>";
    for (const auto& [n, pts] : by_param) b << svg_scatter(n, n, metric, pts);
    b << "</div>";
  }
  std::error_code ec;
  const std::string path = (fs::path(sweep_dir) / "report.html").string();
  write_file_atomic(path, page("ctrain sweep: " + dir_name(sweep_dir), b.str()));
  return path;
}

}  // namespace ctrain::tracking
