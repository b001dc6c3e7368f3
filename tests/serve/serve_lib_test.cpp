// serve/ in process: the registry's versions and checksums, the dynamic batcher's batching and
// back-pressure, the handler's preprocessing, the Prometheus page.
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <atomic>
#include <set>

#include "data/image_folder.h"
#include "serve/batcher.h"
#include "serve/handler.h"
#include "serve/metrics.h"
#include "serve/registry.h"
#include "tests/serve/serve_fixtures.h"

namespace ctrain::testing {
namespace {

std::string sha256sum(const std::string& path) {  // coreutils, independent of OpenSSL
  return run_command("sha256sum " + path + " | cut -d' ' -f1").output.substr(0, 64);
}

TEST(Registry, VersionsCountUpAndRecordChecksumsMetricsAndConfig) {
  TempDir tmp;
  const std::string model = write_mlp_model(tmp / "outputs");
  std::ofstream(tmp / "outputs/model.onnx") << "onnx bytes";
  serve::Registry reg(tmp / "models");
  const auto v1 = reg.register_model("mnist", model, {{"data", "fashion"}});
  const auto v2 = reg.register_model("mnist", model);
  EXPECT_EQ(v1.version, 1);
  EXPECT_EQ(v2.version, 2);
  const auto md = nlohmann::json::parse(read_text(v1.dir + "/metadata.json"));
  EXPECT_EQ(md["files"]["model.pt"]["sha256"], sha256sum(v1.dir + "/model.pt"));
  EXPECT_EQ(md["files"]["model.onnx"]["sha256"], sha256sum(v1.dir + "/model.onnx"));
  EXPECT_EQ(md["run_dir"], fs::absolute(tmp / "outputs").lexically_normal().string());
  EXPECT_EQ(md["metrics"]["validation_acc"], 0.8123);  // the last metrics line
  EXPECT_EQ(md["config"]["epochs"], 3);
  EXPECT_EQ(md["spec"]["arch"], "mlp");
  EXPECT_EQ(md["tags"]["data"], "fashion");
  EXPECT_EQ(reg.resolve(serve::parse_model_ref("mnist")).version, 2);
  EXPECT_EQ(reg.resolve(serve::parse_model_ref("mnist:latest")).version, 2);
  EXPECT_EQ(reg.resolve(serve::parse_model_ref("mnist:1")).version, 1);
  EXPECT_EQ(reg.list().size(), 2u);
}

TEST(Registry, AVersionIsNeverReusedEvenAfterItsFolderIsRemoved) {
  TempDir tmp;
  const std::string model = write_mlp_model(tmp / "outputs");
  serve::Registry reg(tmp / "models");
  reg.register_model("m", model);
  reg.register_model("m", model);
  fs::remove_all(tmp / "models/m/2");
  EXPECT_EQ(reg.register_model("m", model).version, 3);
}

TEST(Registry, RefusesAChangedFileByName) {
  TempDir tmp;
  serve::Registry reg(tmp / "models");
  const auto v = reg.register_model("m", write_mlp_model(tmp / "outputs"));
  {
    std::fstream f(v.dir + "/model.pt", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x5a');
  }
  try {
    reg.resolve(serve::parse_model_ref("m:1"));
    FAIL() << "a changed model.pt was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(v.dir + "/model.pt fails its sha256 check"), std::string::npos) << e.what();
  }
}

TEST(Registry, BadNamesVersionsAndFilesAreRefusedWithWhatExists) {
  TempDir tmp;
  serve::Registry reg(tmp / "models");
  for (const char* bad : {"", ".hidden", "a/b", "sp ace", "m:0", "m:-1", "m:x", "m:"}) {
    EXPECT_THROW(serve::parse_model_ref(bad), ConfigError) << bad;
  }
  std::ofstream(tmp / "not-a-model.pt") << "hello";
  EXPECT_THROW(reg.register_model("m", tmp / "not-a-model.pt"), ConfigError);
  EXPECT_THROW(reg.register_model("m", tmp / "missing.pt"), ConfigError);
  reg.register_model("m", write_mlp_model(tmp / "outputs"));
  try {
    reg.resolve(serve::parse_model_ref("m:7"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no version 7"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("1..1"), std::string::npos) << e.what();
  }
  try {
    reg.resolve(serve::parse_model_ref("other"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("registered names: m"), std::string::npos) << e.what();
  }
}

// Real processes racing on one name: every registration gets its own version.
TEST(Registry, RacingRegistrationsGetDistinctVersions) {
  TempDir tmp;
  const std::string model = write_mlp_model(tmp / "outputs");
  const int n = 8;
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pids.push_back(spawn_command(bin("ctrain-registry") + " --registry " + (tmp / "models") + " register race " + model,
                                 tmp / ("reg" + std::to_string(i) + ".log")));
  }
  for (pid_t p : pids) EXPECT_EQ(wait_exit(p), 0);
  std::set<int64_t> versions;
  for (const auto& v : serve::Registry(tmp / "models").list()) versions.insert(v.version);
  EXPECT_EQ(versions.size(), static_cast<size_t>(n));
  EXPECT_EQ(*versions.begin(), 1);
  EXPECT_EQ(*versions.rbegin(), n);
}

TEST(Batcher, ConcurrentRequestsShareForwardsAndEachGetsItsOwnRows) {
  std::mutex mu;
  std::vector<int64_t> sizes;
  serve::BatcherOptions o;
  o.max_batch = 8;
  o.max_delay_ms = 20;
  serve::DynamicBatcher b(
      [&](const torch::Tensor& x) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        return x * 2 + 1;
      },
      o, [&](int64_t rows) {
        std::lock_guard<std::mutex> lock(mu);
        sizes.push_back(rows);
      });
  std::vector<std::thread> clients;
  std::atomic<int> wrong{0};
  for (int c = 0; c < 16; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 20; ++i) {
        const int64_t n = 1 + (c + i) % 3;
        const auto rows = torch::full({n, 4}, static_cast<float>(c * 1000 + i));
        const auto out = b.submit(rows).get();
        if (!torch::equal(out, rows * 2 + 1)) ++wrong;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(wrong.load(), 0);
  int64_t total = 0, largest = 0;
  for (int64_t s : sizes) total += s, largest = std::max(largest, s);
  EXPECT_LE(largest, 8);
  EXPECT_LT(sizes.size(), 16u * 20u) << "no forward served two requests";
  int64_t expected = 0;
  for (int c = 0; c < 16; ++c) for (int i = 0; i < 20; ++i) expected += 1 + (c + i) % 3;
  EXPECT_EQ(total, expected);
}

TEST(Batcher, AFullQueueRefusesAndAFailedForwardFailsItsRequests) {
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  serve::BatcherOptions o;
  o.max_batch = 1;
  o.max_queue = 2;
  serve::DynamicBatcher b(
      [&](const torch::Tensor& x) -> torch::Tensor {
        gate.wait();
        if (x.item<float>() < 0) throw Error("bad row");
        return x;
      },
      o);
  auto first = b.submit(torch::ones({1, 1}));  // taken by the worker, which waits on the gate
  ASSERT_TRUE(poll_until([&] { return b.queued_rows() == 0; }, 10));
  auto second = b.submit(-torch::ones({1, 1}));
  auto third = b.submit(torch::ones({1, 1}));
  EXPECT_EQ(b.queued_rows(), 2);
  EXPECT_THROW(b.submit(torch::ones({1, 1})), serve::QueueFull);
  release.set_value();
  EXPECT_EQ(first.get().item<float>(), 1.0f);
  EXPECT_THROW(second.get(), Error);
  EXPECT_EQ(third.get().item<float>(), 1.0f);
}

// The message of the serve::BadInput that `f` throws, or "accepted" when it throws none.
template <class F>
std::string bad_input_message(F&& f) {
  try {
    f();
  } catch (const serve::BadInput& e) {
    return e.what();
  }
  return "accepted";
}

TEST(Handler, JsonTakesOneInputOrABatchAndNamesTheExpectedShape) {
  TempDir tmp;
  serve::Handler h(apps::load_model(write_mlp_model(tmp / "o")), torch::kCPU);
  EXPECT_EQ(h.preprocess_json(nlohmann::json(std::vector<float>(784, 0.5f))).sizes(), (std::vector<int64_t>{1, 784}));
  const auto two = nlohmann::json::array({std::vector<float>(784, 0.f), std::vector<float>(784, 1.f)});
  const auto rows = h.preprocess_json(two);
  EXPECT_EQ(rows.sizes(), (std::vector<int64_t>{2, 784}));
  EXPECT_EQ(rows[1][783].item<float>(), 1.0f);
  auto message = [&](const nlohmann::json& data) { return bad_input_message([&] { h.preprocess_json(data); }); };
  EXPECT_NE(message(nlohmann::json::array({1, 2, 3})).find("shape [3]; this model takes [N, 784] or [784]"), std::string::npos);
  EXPECT_NE(message(nlohmann::json::array()).find("[N, 784]"), std::string::npos);
  auto ragged = two;
  ragged[1].erase(0);
  EXPECT_NE(message(ragged).find("data[1] is not a list of 784"), std::string::npos) << message(ragged);
  auto text = two;
  text[0][5] = "x";
  EXPECT_NE(message(text).find("data[0][5] is not a number"), std::string::npos) << message(text);
  EXPECT_NE(message("hello").find("shape []"), std::string::npos);
}

// .npy bytes as numpy/lib/format.py lays them out: magic, version, header length (2 bytes in
// version 1, 4 in 2 and 3), the header dict padded with spaces to a 64-byte boundary and a
// newline, then the values.
std::string npy(int version, const std::string& dict, const std::string& data) {
  const size_t prefix = version == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = std::string("\x93NUMPY") + static_cast<char>(version) + '\0';
  for (size_t i = 0; i < prefix - 8; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

TEST(Handler, NpyTakesVersionsOneToThreeAndRefusesWhatItCannotRead) {
  TempDir tmp;
  serve::Handler h(apps::load_model(write_mlp_model(tmp / "o")), torch::kCPU);
  std::vector<float> values(2 * 784);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) / 1000.0f;
  const std::string f32(reinterpret_cast<const char*>(values.data()), values.size() * 4);
  for (int version : {1, 2, 3}) {
    const auto rows = h.preprocess_npy(npy(version, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 784), }", f32));
    ASSERT_EQ(rows.sizes(), (std::vector<int64_t>{2, 784})) << "version " << version;
    EXPECT_EQ(rows[1][5].item<float>(), values[784 + 5]);
  }
  // Keys in another order, and one input without the batch dimension.
  EXPECT_EQ(h.preprocess_npy(npy(1, "{'shape': (784,), 'fortran_order': False, 'descr': '<f4'}", f32.substr(0, 784 * 4))).sizes(),
            (std::vector<int64_t>{1, 784}));
  auto message = [&](const std::string& bytes) { return bad_input_message([&] { h.preprocess_npy(bytes); }); };
  const std::string good = npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 784), }", f32);
  EXPECT_NE(message(good.substr(0, 9)).find("not a .npy file"), std::string::npos);
  EXPECT_NE(message(good.substr(0, 40)).find("only 30 follow the preamble"), std::string::npos) << message(good.substr(0, 40));
  std::string v9 = good;
  v9[6] = 9;
  EXPECT_NE(message(v9).find("format version 9"), std::string::npos);
  EXPECT_NE(message(npy(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 784), }", f32)).find("dtype '>f4'"),
            std::string::npos);
  EXPECT_NE(message(npy(1, "{'fortran_order': False, 'shape': (2, 784), }", f32)).find("dtype (none)"), std::string::npos);
  EXPECT_NE(message(npy(1, "{'descr': '<f4', 'shape': (2, 784), }", f32)).find("fortran_order is missing"),
            std::string::npos);
  EXPECT_NE(message(npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", f32)).find("not a tuple of sizes"),
            std::string::npos);
  EXPECT_NE(message(npy(1, "{'descr': '<f4', 'fortran_order': False, }", f32)).find("no shape tuple"), std::string::npos);
  // The shape is a Python tuple as NumPy reads it back: "(2 784)" and "(784)" are not one.
  for (const char* shape : {"(2 784)", "(784)", "(2,,784)", "(,)", "(2, 784,,)"}) {
    EXPECT_NE(message(npy(1, std::string("{'descr': '<f4', 'fortran_order': False, 'shape': ") + shape + ", }", f32))
                  .find("not a tuple of sizes"),
              std::string::npos)
        << shape;
  }
  EXPECT_EQ(h.preprocess_npy(npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': ( 2 , 784 , ), }", f32)).sizes(),
            (std::vector<int64_t>{2, 784}));
  // A shape whose product overflows 64 bits is refused by its length, not trusted.
  EXPECT_NE(message(npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (999999999999, 784), }", f32))
                .find("holds 2^40 values or more, far more than the 6272 bytes"),
            std::string::npos);
  EXPECT_NE(message(npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 784), }", f32))
                .find("needs 9408 bytes of data, but 6272 follow"),
            std::string::npos);
  // The client's header text is echoed 64 characters at most, and a shape with more dimensions
  // than NumPy allows is refused at the first one too many.
  const std::string long_descr = message(npy(2, "{'descr': '" + std::string(100000, 'x') + "', 'fortran_order': False, }", f32));
  EXPECT_NE(long_descr.find("xxx... is not accepted"), std::string::npos) << long_descr.substr(0, 300);
  EXPECT_LT(long_descr.size(), 400u);
  std::string dims;
  for (int i = 0; i < 1000; ++i) dims += "1, ";
  EXPECT_NE(message(npy(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "784), }", f32))
                .find("has more than 64 dimensions (NumPy's limit)"),
            std::string::npos);
  const std::string f64(reinterpret_cast<const char*>(std::vector<double>(784, 1e300).data()), 784 * 8);
  EXPECT_NE(message(npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (784,), }", f64)).find("value 0 (flat index)"),
            std::string::npos);
}

TEST(Handler, ImagesGoThroughTheEvalTransformOfTheirModel) {
  TempDir tmp;
  // MNIST: a grayscale 28x28 PNG scores as its pixels / 255.
  serve::Handler mlp(apps::load_model(write_mlp_model(tmp / "o")), torch::kCPU);
  cv::Mat gray(28, 28, CV_8UC1);
  for (int i = 0; i < 28 * 28; ++i) gray.data[i] = static_cast<uint8_t>(i * 7 % 256);
  std::vector<uint8_t> png;
  cv::imencode(".png", gray, png);
  const auto rows = mlp.preprocess_image(std::string(png.begin(), png.end()), "digit.png");
  ASSERT_EQ(rows.sizes(), (std::vector<int64_t>{1, 784}));
  EXPECT_FLOAT_EQ(rows[0][100].item<float>(), (100 * 7 % 256) / 255.0f);
  // Birds: the loader's validation path (Resize, CenterCrop, Normalize), byte for byte.
  serve::Handler birds(apps::load_model(write_birds_model(tmp / "b")), torch::kCPU);
  cv::Mat photo(90, 120, CV_8UC3, cv::Scalar(30, 120, 200));
  cv::circle(photo, {60, 45}, 20, cv::Scalar(250, 250, 250), -1);
  std::vector<uint8_t> jpg;
  cv::imencode(".jpg", photo, jpg);
  const std::string bytes(jpg.begin(), jpg.end());
  const auto x = birds.preprocess_image(bytes, "bird.jpg");
  data::ImageTransform t;
  t.mode = data::Augment::kEval;
  t.size = 64;
  t.resize = 64 * 256 / 224;
  auto expected = torch::empty({1, 3, 64, 64});
  std::mt19937_64 rng(0);
  data::decode_and_transform(bytes, "bird.jpg", t, data::DecodeOptions{}, rng, expected.data_ptr<float>());
  EXPECT_TRUE(torch::equal(x, expected));
  EXPECT_THROW(birds.preprocess_image("not an image", "junk"), serve::BadInput);
  EXPECT_THROW(birds.preprocess_image(bytes.substr(0, 100), "cut.jpg"), serve::BadInput);
  // Probabilities and labels.
  const auto p = birds.infer(x);
  EXPECT_NEAR(p.sum().item<float>(), 1.0f, 1e-5);
  const auto pred = birds.postprocess(p);
  EXPECT_EQ(pred[0].label, birds.classes()[pred[0].index]);
  EXPECT_EQ(birds.classes(), (std::vector<std::string>{"chicken", "turkey"}));
}

TEST(Metrics, ThePrometheusPageHasCumulativeBuckets) {
  serve::ServiceMetrics m;
  m.count(200);
  m.count(200);
  m.count(503);
  m.latency(0.003);
  m.latency(0.2);
  m.batch(3);
  const std::string page = m.render(5);
  EXPECT_NE(page.find("ctrain_requests_total{code=\"200\"} 2\n"), std::string::npos) << page;
  EXPECT_NE(page.find("ctrain_requests_total{code=\"503\"} 1\n"), std::string::npos);
  EXPECT_NE(page.find("ctrain_request_duration_seconds_bucket{le=\"0.0025\"} 0\n"), std::string::npos) << page;
  EXPECT_NE(page.find("ctrain_request_duration_seconds_bucket{le=\"0.005\"} 1\n"), std::string::npos);
  EXPECT_NE(page.find("ctrain_request_duration_seconds_bucket{le=\"+Inf\"} 2\n"), std::string::npos);
  EXPECT_NE(page.find("ctrain_batch_size_bucket{le=\"2\"} 0\n"), std::string::npos);
  EXPECT_NE(page.find("ctrain_batch_size_bucket{le=\"4\"} 1\n"), std::string::npos);
  EXPECT_NE(page.find("ctrain_queue_depth 5\n"), std::string::npos);
}

}  // namespace
}  // namespace ctrain::testing
