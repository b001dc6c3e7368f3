// ctrain-serve, ctrain-score and ctrain-registry as real processes over real sockets.
#include <netinet/in.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <tuple>
#include <sstream>

#include "core/fs.h"
#include "data/idx.h"
#include "serve/handler.h"
#include "tests/serve/serve_fixtures.h"

namespace ctrain::testing {
namespace {

// A JPEG (or PNG) of a w x h scene; `seed` varies it.
std::string photo_bytes(int w, int h, int seed, const char* ext = ".jpg") {
  cv::Mat img(h, w, CV_8UC3, cv::Scalar(20 + seed * 37 % 200, 90, 200 - seed * 13 % 150));
  cv::circle(img, {w / 2 + seed % 10, h / 2}, h / 4, cv::Scalar(240, 240 - seed * 5 % 200, 240), -1);
  std::vector<uint8_t> buf;
  cv::imencode(ext, img, buf);
  return std::string(buf.begin(), buf.end());
}

nlohmann::json score_lines_by_file(const std::string& output) {
  nlohmann::json by_file = nlohmann::json::object();
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '{') continue;
    const auto j = nlohmann::json::parse(line);
    if (j.contains("label")) by_file[j["file"].get<std::string>()] = j;
  }
  return by_file;
}

class ServeCli : public ::testing::Test {
 protected:
  TempDir tmp;
};

TEST_F(ServeCli, JsonScoresEqualLibTorchsForwardAndMetadataDescribesTheModel) {
  const std::string model = write_mlp_model(tmp / "outputs");
  ServeProcess svc("--model " + model, tmp / "serve.log");
  ASSERT_GT(svc.port(), 0) << svc.log();
  EXPECT_NE(svc.log().find("(model " + model + ", 10 classes)"), std::string::npos) << svc.log();
  auto cli = svc.client();
  torch::manual_seed(3);
  const auto rows = torch::rand({5, 784});
  const auto res = cli.Post("/score", json_body(rows), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const auto preds = nlohmann::json::parse(res->body)["predictions"];
  const auto ref = reference_probabilities(model, rows);
  ASSERT_EQ(preds.size(), 5u);
  for (int64_t i = 0; i < 5; ++i) {
    const auto best = ref[i].max(0);
    EXPECT_EQ(preds[i]["label"], std::to_string(std::get<1>(best).item<int64_t>()));
    EXPECT_NEAR(preds[i]["probability"].get<double>(), std::get<0>(best).item<float>(), 1e-5);
  }
  // One input without the batch dimension.
  const auto one = cli.Post("/score", nlohmann::json({{"data", std::vector<float>(784, 0.25f)}}).dump(), "application/json");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  EXPECT_EQ(nlohmann::json::parse(one->body)["predictions"].size(), 1u);
  const auto md = cli.Get("/metadata");
  ASSERT_TRUE(md);
  const auto m = nlohmann::json::parse(md->body);
  EXPECT_EQ(m["input_shape"], nlohmann::json::array({-1, 784}));
  EXPECT_EQ(m["classes"].size(), 10u);
  EXPECT_EQ(m["spec"]["arch"], "mlp");
  EXPECT_EQ(cli.Get("/health")->status, 200);
  EXPECT_EQ(svc.stop(), 0);
}

// application/x-npy: arrays written by NumPy's own np.save (float32 batch, float64 single
// input) score as the same rows in JSON do; a wrong dtype, Fortran order, a wrong shape, a
// cut body and a NaN are 400s that say which.
TEST_F(ServeCli, NpyArraysFromNumpyScoreAsTheirJsonAndBadOnesSayWhy) {
  CTRAIN_PYTHON_OR_SKIP(py, "numpy", "python3-numpy");
  const std::string model = write_mlp_model(tmp / "outputs");
  torch::manual_seed(5);
  const auto rows = torch::rand({5, 784});
  {
    std::ofstream raw(tmp / "rows.f32", std::ios::binary);
    raw.write(static_cast<const char*>(rows.data_ptr()), static_cast<std::streamsize>(rows.numel() * 4));
  }
  const std::string d = tmp.path().string();
  const auto made = run_command(
      py + " -c \"import numpy as np; d='" + d + "'; x = np.fromfile(d + '/rows.f32', '<f4').reshape(5, 784)\n"
      "np.save(d + '/batch.npy', x); np.save(d + '/one.npy', x[2].astype('<f8'))\n"
      "np.save(d + '/int.npy', x.astype('<i4')); np.save(d + '/fortran.npy', np.asfortranarray(x))\n"
      "np.save(d + '/shape.npy', x.reshape(5, 28, 28)); y = x.copy(); y[1, 7] = np.nan; np.save(d + '/nan.npy', y)\"");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  ServeProcess svc("--model " + model, tmp / "serve.log");
  ASSERT_GT(svc.port(), 0) << svc.log();
  auto cli = svc.client();
  auto post = [&](const std::string& file, std::string cut = "") {
    std::string body = read_file(tmp / file);
    if (!cut.empty()) body.resize(body.size() - std::stoul(cut));
    return cli.Post("/score", body, "application/x-npy");
  };
  const auto batch = post("batch.npy");
  ASSERT_TRUE(batch);
  ASSERT_EQ(batch->status, 200) << batch->body;
  const auto as_json = cli.Post("/score", json_body(rows), "application/json");
  ASSERT_TRUE(as_json);
  EXPECT_EQ(nlohmann::json::parse(batch->body), nlohmann::json::parse(as_json->body));
  const auto one = post("one.npy");
  ASSERT_TRUE(one);
  ASSERT_EQ(one->status, 200) << one->body;
  // A forward of one row may round differently from one of five.
  const auto p1 = nlohmann::json::parse(one->body)["predictions"][0], p5 = nlohmann::json::parse(as_json->body)["predictions"][2];
  EXPECT_EQ(p1["label"], p5["label"]);
  EXPECT_NEAR(p1["probability"].get<double>(), p5["probability"].get<double>(), 1e-5);
  for (const auto& [file, cut, says] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"int.npy", "", "dtype '<i4' is not accepted"},
           {"fortran.npy", "", "fortran_order is True"},
           {"shape.npy", "", "shape [5, 28, 28]; this model takes [N, 784] or [784]"},
           {"batch.npy", "4", "needs 15680 bytes of data, but 15676 follow"},
           {"nan.npy", "", "value 791 (flat index) is nan"}}) {
    const auto r = post(file, cut);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << file;
    EXPECT_NE(r->body.find(says), std::string::npos) << file << ": " << r->body;
  }
  const auto not_npy = cli.Post("/score", std::string("{\"data\": [1]}"), "application/x-npy");
  ASSERT_TRUE(not_npy);
  EXPECT_EQ(not_npy->status, 400);
  EXPECT_NE(not_npy->body.find("not a .npy file"), std::string::npos) << not_npy->body;
  const auto md = nlohmann::json::parse(cli.Get("/metadata")->body);
  EXPECT_NE(std::find(md["content_types"].begin(), md["content_types"].end(), "application/x-npy"),
            md["content_types"].end());
  EXPECT_EQ(svc.stop(), 0);
}

TEST_F(ServeCli, ImagesScoreAsCtrainScoreAndLibTorchScoreThem) {
  const std::string model = write_birds_model(tmp / "outputs");
  fs::create_directories(tmp / "photos");
  std::vector<std::string> files;
  for (int i = 0; i < 4; ++i) {
    const char* ext = i == 3 ? ".png" : ".jpg";
    files.push_back(tmp / ("photos/" + std::to_string(i) + ext));
    std::ofstream(files.back(), std::ios::binary) << photo_bytes(160 + 20 * i, 120, i, ext);
  }
  const auto scored = run_command(bin("ctrain-score") + " --model " + model + " --batch-size 3 " + (tmp / "photos"));
  ASSERT_EQ(scored.exit_code, 0) << scored.output;
  const auto by_file = score_lines_by_file(scored.output);
  ASSERT_EQ(by_file.size(), 4u) << scored.output;

  ServeProcess svc("--model " + model, tmp / "serve.log");
  ASSERT_GT(svc.port(), 0) << svc.log();
  auto cli = svc.client();
  serve::Handler reference(apps::load_model(model), torch::kCPU);
  for (const auto& f : files) {
    const std::string bytes = read_text(f);
    const auto res = cli.Post("/score", bytes, f.size() > 4 && f.substr(f.size() - 4) == ".png" ? "image/png" : "image/jpeg");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    const auto p = nlohmann::json::parse(res->body)["predictions"][0];
    EXPECT_EQ(p["label"], by_file[f]["label"]) << f;
    EXPECT_NEAR(p["probability"].get<double>(), by_file[f]["probability"].get<double>(), 1e-5) << f;
    // LibTorch directly on the same preprocessed input.
    const auto ref = reference_probabilities(model, reference.preprocess_image(bytes, f));
    EXPECT_NEAR(p["probability"].get<double>(), ref.max().item<float>(), 1e-5) << f;
    EXPECT_TRUE(p["label"] == "chicken" || p["label"] == "turkey");
  }
}

TEST_F(ServeCli, BadRequestsGetTheirStatusAndTheServiceStaysUp) {
  const std::string model = write_mlp_model(tmp / "outputs");
  ServeProcess svc("--model " + model + " --max-body-mb 1", tmp / "serve.log");
  ASSERT_GT(svc.port(), 0) << svc.log();
  auto cli = svc.client();
  auto expect = [&](int status, const std::string& body, const std::string& type, const std::string& says) {
    const auto res = cli.Post("/score", body, type);
    ASSERT_TRUE(res) << type;
    EXPECT_EQ(res->status, status) << res->body;
    EXPECT_NE(nlohmann::json::parse(res->body)["error"].get<std::string>().find(says), std::string::npos) << res->body;
  };
  expect(400, "{\"data\": [1, 2", "application/json", "malformed JSON");
  expect(400, "{\"inputs\": [1]}", "application/json", "{\"data\": [...]}");
  expect(400, "{\"data\": [[1, 2, 3]]}", "application/json", "this model takes [N, 784] or [784]");
  expect(400, "{\"data\": [\"a\"]}", "application/json", "this model takes");
  expect(415, "hello", "text/plain", "Content-Type 'text/plain' is not accepted");
  expect(400, "definitely not a jpeg", "image/jpeg", "is not a JPEG or PNG image");
  expect(400, photo_bytes(64, 64, 1).substr(0, 300), "image/jpeg", "request body");
  expect(413, std::string(2 << 20, ' '), "application/json", "--max-body-mb");
  EXPECT_EQ(cli.Get("/nowhere")->status, 404);
  // Still serving, and the metrics page counted each answer.
  const auto ok = cli.Post("/score", json_body(torch::zeros({1, 784})), "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  const std::string metrics = cli.Get("/metrics")->body;
  EXPECT_NE(metrics.find("ctrain_requests_total{code=\"400\"} 6"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("ctrain_requests_total{code=\"413\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("ctrain_requests_total{code=\"415\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("ctrain_batch_size_count"), std::string::npos);
  EXPECT_NE(metrics.find("ctrain_queue_depth 0"), std::string::npos);
  EXPECT_EQ(svc.stop(), 0);
}

// Many clients at once, each with its own inputs: the answers never mix inside a batch.
TEST_F(ServeCli, ConcurrentClientsGetTheirOwnAnswersFromSharedBatches) {
  const std::string model = write_mlp_model(tmp / "outputs");
  ServeProcess svc("--model " + model + " --max-batch 16 --max-delay-ms 20", tmp / "serve.log");
  ASSERT_GT(svc.port(), 0) << svc.log();
  const int clients = 12, each = 15;
  torch::manual_seed(9);
  const auto inputs = torch::rand({clients * each, 784});
  const auto ref = reference_probabilities(model, inputs);
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto cli = svc.client();
      for (int i = 0; i < each; ++i) {
        const int64_t k = c * each + i;
        const auto res = cli.Post("/score", json_body(inputs.narrow(0, k, 1)), "application/json");
        if (!res || res->status != 200) {
          ++failed;
          continue;
        }
        const auto p = nlohmann::json::parse(res->body)["predictions"][0];
        const auto best = ref[k].max(0);
        if (p["label"] != std::to_string(std::get<1>(best).item<int64_t>()) ||
            std::abs(p["probability"].get<double>() - std::get<0>(best).item<float>()) > 1e-5) {
          ++wrong;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  // Some forward carried more than one request.
  const std::string metrics = svc.client().Get("/metrics")->body;
  const std::regex sum("ctrain_batch_size_sum ([0-9.e+]+)"), count("ctrain_batch_size_count ([0-9]+)");
  std::smatch ms, mc;
  ASSERT_TRUE(std::regex_search(metrics, ms, sum) && std::regex_search(metrics, mc, count)) << metrics;
  EXPECT_EQ(std::stod(ms[1]), clients * each);
  EXPECT_LT(std::stoi(mc[1]), clients * each) << metrics;
}

TEST_F(ServeCli, AFullQueueAnswers503WithRetryAfter) {
  const std::string model = write_birds_model(tmp / "outputs");
  ServeProcess svc("--model " + model + " --max-batch 1 --max-queue 1 --threads 1", tmp / "serve.log");
  ASSERT_GT(svc.port(), 0) << svc.log();
  const std::string body = photo_bytes(200, 150, 2);
  std::atomic<int> ok{0}, busy{0}, other{0}, retry_after{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < 12; ++c) {
    threads.emplace_back([&] {
      auto cli = svc.client();
      for (int i = 0; i < 6; ++i) {
        const auto res = cli.Post("/score", body, "image/jpeg");
        if (res && res->status == 200) {
          ++ok;
        } else if (res && res->status == 503) {
          ++busy;
          retry_after += res->get_header_value("Retry-After") == "1";
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(busy.load(), 0) << "12 clients never filled a queue of 1";
  EXPECT_EQ(retry_after.load(), busy.load());
  EXPECT_EQ(other.load(), 0);
}

TEST_F(ServeCli, AnApiKeyIsRequiredAndNeverLogged) {
  const std::string model = write_mlp_model(tmp / "outputs");
  const std::string key = "s3cret-key-4242";
  std::ofstream(tmp / "key.txt") << key << "\n";
  ServeProcess svc("--model " + model + " --api-key-file " + (tmp / "key.txt") + " --access-log", tmp / "serve.log");
  ASSERT_GT(svc.port(), 0) << svc.log();
  auto cli = svc.client();
  const std::string body = json_body(torch::zeros({1, 784}));
  const auto none = cli.Post("/score", body, "application/json");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(cli.Get("/metadata")->status, 401);
  EXPECT_EQ(cli.Get("/metrics")->status, 401);
  EXPECT_EQ(cli.Get("/health")->status, 200);  // liveness probes carry no key
  httplib::Headers wrong{{"Authorization", "Bearer s3cret-key-4243"}};
  EXPECT_EQ(cli.Post("/score", wrong, body, "application/json")->status, 401);
  httplib::Headers right{{"Authorization", "Bearer " + key}};
  EXPECT_EQ(cli.Post("/score", right, body, "application/json")->status, 200);
  EXPECT_EQ(svc.stop(), 0);
  const std::string log = read_text(tmp / "serve.log");
  EXPECT_NE(log.find("POST /score 401"), std::string::npos) << log;
  EXPECT_EQ(log.find(key), std::string::npos) << log;
}

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Everything until the peer closes; false if recv failed instead (SO_RCVTIMEO ran out).
bool read_all(int fd, std::string* out = nullptr) {
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) {
    if (out) out->append(buf, static_cast<size_t>(n));
  }
  return n == 0;
}

// SIGTERM while a request is half sent: no new connections, the request is answered, exit 0.
TEST_F(ServeCli, SigtermFinishesTheRequestInFlightAndExitsZero) {
  const std::string model = write_mlp_model(tmp / "outputs");
  ServeProcess svc("--model " + model, tmp / "serve.log");
  ASSERT_GT(svc.port(), 0) << svc.log();
  const std::string body = json_body(torch::full({1, 784}, 0.5f));
  const int fd = connect_to(svc.port());
  ASSERT_GE(fd, 0);
  const std::string head = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
                           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  const std::string first = head + body.substr(0, body.size() / 2);
  ASSERT_EQ(::send(fd, first.data(), first.size(), 0), static_cast<ssize_t>(first.size()));
  // The server accepts connections in the order they came, so an answer on a later one means
  // this one is accepted: a stop closes the listening socket, which would reset a connection
  // still in its backlog. Whether the half request is read yet does not matter; sent is begun.
  const auto health = svc.client().Get("/health");
  ASSERT_TRUE(health);
  ASSERT_EQ(health->status, 200);
  ::kill(svc.pid(), SIGTERM);
  EXPECT_TRUE(poll_until([&] {
    const int other = connect_to(svc.port());
    if (other >= 0) ::close(other);
    return other < 0;
  }, 10)) << "still accepting connections after SIGTERM";
  const std::string rest = body.substr(body.size() / 2);
  ASSERT_EQ(::send(fd, rest.data(), rest.size(), 0), static_cast<ssize_t>(rest.size()));
  std::string answer;
  EXPECT_TRUE(read_all(fd, &answer));
  ::close(fd);
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"predictions\""), std::string::npos) << answer;
  EXPECT_EQ(svc.stop(), 0) << svc.log();
  EXPECT_NE(read_text(tmp / "serve.log").find("stopped after draining"), std::string::npos);
}

// A client that stalls mid-request is dropped after --timeout-s; others are served meanwhile.
// 3 s, not 1: the healthy request must arrive whole within it too, on a loaded machine.
TEST_F(ServeCli, ASlowClientTimesOutWithoutHoldingOthersUp) {
  const std::string model = write_mlp_model(tmp / "outputs");
  ServeProcess svc("--model " + model + " --timeout-s 3", tmp / "serve.log");
  ASSERT_GT(svc.port(), 0) << svc.log();
  const int fd = connect_to(svc.port());
  ASSERT_GE(fd, 0);
  const std::string partial = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"data\": [";
  ::send(fd, partial.data(), partial.size(), 0);
  const auto res = svc.client().Post("/score", json_body(torch::zeros({1, 784})), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  // The server must close the stalled connection itself; the client's own 60 s receive
  // timeout only keeps a broken server from hanging the test.
  timeval limit{60, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  EXPECT_TRUE(read_all(fd)) << "the stalled connection was never closed by the server";
  ::close(fd);
}

TEST_F(ServeCli, RegisteredVersionsServeByNameAndAChangedFileIsRefused) {
  const std::string model = write_mlp_model(tmp / "outputs");
  const std::string reg = "--registry " + (tmp / "models");
  const auto r1 = run_command(bin("ctrain-registry") + " " + reg + " register mnist " + model + " --tag data=synthetic");
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  EXPECT_NE(r1.output.find("registered mnist version 1"), std::string::npos) << r1.output;
  ASSERT_EQ(run_command(bin("ctrain-registry") + " " + reg + " register mnist " + model).exit_code, 0);
  const auto list = run_command(bin("ctrain-registry") + " " + reg + " list");
  EXPECT_NE(list.output.find("data=synthetic"), std::string::npos) << list.output;
  const auto path = run_command(bin("ctrain-registry") + " " + reg + " path mnist:latest");
  EXPECT_EQ(path.output, fs::absolute(tmp / "models/mnist/2/model.pt").string() + "\n");
  const auto show = run_command(bin("ctrain-registry") + " " + reg + " show mnist:1");
  EXPECT_EQ(nlohmann::json::parse(show.output)["tags"]["data"], "synthetic");
  {
    ServeProcess svc("--model mnist:latest " + reg, tmp / "serve.log");
    ASSERT_GT(svc.port(), 0) << svc.log();
    EXPECT_NE(svc.log().find("(model mnist:2, 10 classes)"), std::string::npos) << svc.log();
  }
  std::ofstream(tmp / "models/mnist/1/model.pt", std::ios::app) << "x";
  const auto refused = run_command(bin("ctrain-serve") + " --port 0 --model mnist:1 " + reg);
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_NE(refused.output.find("models/mnist/1/model.pt fails its sha256 check"), std::string::npos) << refused.output;
  const auto unknown = run_command(bin("ctrain-serve") + " --port 0 --model nosuch " + reg);
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.output.find("no model named 'nosuch'"), std::string::npos) << unknown.output;
  const auto bad = run_command(bin("ctrain-registry") + " " + reg + " register 'bad name' " + model);
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
}

TEST_F(ServeCli, ScoringAnIdxFilePrintsEachImageAndTheAccuracy) {
  const std::string model = write_mlp_model(tmp / "outputs");
  write_synthetic_mnist(tmp / "data", 10, 40);
  const auto r = run_command(bin("ctrain-score") + " --model " + model + " --batch-size 16 " + (tmp / "data/t10k-images-idx3-ubyte.gz") + " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::istringstream in(r.output);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 41u);
  const auto data = ctrain::data::load_mnist(tmp / "data");
  const auto ref = reference_probabilities(model, data.test.images);
  const auto pred = std::get<1>(ref.max(1));
  int64_t correct = 0;
  for (int64_t i = 0; i < 40; ++i) {
    EXPECT_EQ(lines[i]["index"], i);
    EXPECT_EQ(lines[i]["label"], std::to_string(pred[i].item<int64_t>()));
    correct += pred[i].item<int64_t>() == data.test.labels[i].item<int64_t>();
  }
  EXPECT_EQ(lines[40]["correct"], correct);
  EXPECT_EQ(lines[40]["total"], 40);
  EXPECT_DOUBLE_EQ(lines[40]["accuracy"].get<double>(), correct / 40.0);
}

TEST_F(ServeCli, ScoringSkipsAndNamesABadImageAndExitsOne) {
  const std::string model = write_birds_model(tmp / "outputs");
  fs::create_directories(tmp / "in");
  std::ofstream(tmp / "in/good.jpg", std::ios::binary) << photo_bytes(100, 80, 1);
  std::ofstream(tmp / "in/broken.jpg", std::ios::binary) << "not a jpeg at all";
  const auto r = run_command(bin("ctrain-score") + " --model " + model + " " + (tmp / "in"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("broken.jpg"), std::string::npos) << r.output;
  EXPECT_EQ(score_lines_by_file(r.output).size(), 1u) << r.output;
  EXPECT_EQ(run_command(bin("ctrain-score") + " --model " + model + " " + (tmp / "missing")).exit_code, 2);
  EXPECT_EQ(run_command(bin("ctrain-score") + " --model " + model + " --batch-size 0 " + (tmp / "in")).exit_code, 2);
}

}  // namespace
}  // namespace ctrain::testing
