// Part of hostile_test, one file per class of hostile input (README, Tests: hostile input).
// Hostile models and images: a model.pt whose spec was crafted (a mean of 0 or 1 values, sizes
// that allocate 120 GB, wrong JSON types), JPEGs and PNGs cut short, and JSON numbers that are
// not finite as a float.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "apps/common/models.h"
#include "data/decode.h"
#include "data/image_folder.h"
#include "engine/checkpoint.h"
#include "models/spec.h"
#include "serve/handler.h"
#include "tests/serve/serve_fixtures.h"
#include "tests/support/fixtures.h"
#include "tests/support/images.h"

namespace ctrain::testing {
namespace {

using nlohmann::json;

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// What ctrain-birds and ctrain-mnist write (apps/ctrain-birds/main.cpp, apps/ctrain-mnist/main.cpp).
json birds_spec() {
  return {{"arch", "resnet18"}, {"num_classes", 2}, {"classes", {"chicken", "turkey"}}, {"image_size", 64},
          {"mean", std::vector<float>{0.485f, 0.456f, 0.406f}}, {"std", std::vector<float>{0.229f, 0.224f, 0.225f}}};
}
json mnist_spec() {
  return {{"arch", "mlp"}, {"in_features", 784}, {"hidden1", 256}, {"hidden2", 128}, {"num_classes", 10}};
}

struct BadField {
  json spec;
  std::string field;  // the message must name it
  std::string value;  // ... and show the value
};

std::vector<BadField> bad_fields() {
  std::vector<BadField> out;
  auto birds = [&](const std::string& key, json value, const std::string& shown) {
    json s = birds_spec();
    s[key] = std::move(value);
    out.push_back({s, key, shown});
  };
  auto mnist = [&](const std::string& key, json value, const std::string& shown) {
    json s = mnist_spec();
    s[key] = std::move(value);
    out.push_back({s, key, shown});
  };
  birds("mean", json::array(), "[]");
  birds("mean", {0.5}, "[0.5]");
  birds("mean", {0.5, 0.5, 0.5, 0.5}, "[0.5,0.5,0.5,0.5]");
  birds("mean", "abc", "\"abc\"");
  birds("mean", {0.5, "x", 0.5}, "\"x\"");
  birds("mean", {0.5, nullptr, 0.5}, "null");
  birds("mean", {0.5, std::nan(""), 0.5}, "null");  // NaN can only be built in memory
  birds("std", {0.0, 1.0, 1.0}, "[0.0,1.0,1.0]");
  birds("std", {-1.0, 1.0, 1.0}, "[-1.0,1.0,1.0]");
  birds("std", {1.0, 1.0, std::numeric_limits<double>::infinity()}, "null");
  birds("image_size", 0, "0");
  birds("image_size", 100000, "100000");
  birds("image_size", -224, "-224");
  birds("image_size", "224", "\"224\"");
  birds("image_size", 224.5, "224.5");
  birds("num_classes", -3, "-3");
  birds("num_classes", 0, "0");
  birds("num_classes", 100001, "100001");
  birds("num_classes", std::numeric_limits<uint64_t>::max(), "18446744073709551615");
  birds("num_classes", true, "true");
  birds("classes", {"chicken"}, "[\"chicken\"]");
  birds("classes", "chicken", "\"chicken\"");
  birds("classes", {"chicken", 7}, "7");
  birds("classes", {"chicken", std::string(5000, 'x')}, "xxxx");
  birds("arch", "vgg16", "\"vgg16\"");
  birds("arch", 18, "18");
  mnist("in_features", 0, "0");
  mnist("in_features", -784, "-784");
  mnist("in_features", int64_t{1} << 40, "1099511627776");
  mnist("hidden1", 10000000, "10000000");
  mnist("hidden2", "128", "\"128\"");
  mnist("num_classes", -1, "-1");
  {
    json s = mnist_spec();  // each width in range, their product 32 GB of weights
    s["in_features"] = 65536;
    s["hidden1"] = 65536;
    out.push_back({s, "in_features x hidden1", "65536 x 65536"});
  }
  {
    json s = birds_spec();
    s.erase("num_classes");
    out.push_back({s, "num_classes", "missing"});
  }
  return out;
}

TEST(HostileModelSpec, EveryBadValueIsRefusedNamingTheFieldAndTheValue) {
  for (const auto& bad : bad_fields()) {
    const std::string e = error_of([&] { models::ModelSpec::from_json(bad.spec, "crafted.pt: model spec"); });
    EXPECT_NE(e.find(bad.field), std::string::npos) << bad.spec.dump() << "\n -> " << e;
    EXPECT_NE(e.find(bad.value), std::string::npos) << bad.spec.dump() << "\n -> " << e;
    EXPECT_NE(e.find("crafted.pt"), std::string::npos) << e;
    EXPECT_LT(e.size(), 1000u) << "a 5000-byte value is cut short in the message";
  }
}

TEST(HostileModelSpec, NotAnObjectIsRefused) {
  for (const json& spec : {json(nullptr), json::array({1, 2}), json("mlp"), json(3)}) {
    const std::string e = error_of([&] { models::ModelSpec::from_json(spec); });
    EXPECT_NE(e.find("model spec"), std::string::npos) << spec.dump() << " -> " << e;
  }
  EXPECT_NE(error_of([] { models::ModelSpec::from_json(json::object()); }).find("arch is missing"),
            std::string::npos);
}

TEST(HostileModelSpec, WhatTheTrainersWriteRoundTripsWithUnknownFieldsKept) {
  for (json spec : {birds_spec(), mnist_spec()}) {
    EXPECT_EQ(models::ModelSpec::from_json(spec).to_json(), spec);
    spec["trained_by"] = {{"tool", "a later ctrain"}, {"version", 2}};  // a field from the future
    const models::ModelSpec s = models::ModelSpec::from_json(spec);
    EXPECT_EQ(s.to_json(), spec);
    EXPECT_EQ(models::ModelSpec::from_json(s.to_json()), s);
  }
  const auto birds = models::ModelSpec::from_json(birds_spec());
  EXPECT_EQ(birds.input_shape(), (std::vector<int64_t>{3, 64, 64}));
  EXPECT_EQ(birds.classes, (std::vector<std::string>{"chicken", "turkey"}));
  EXPECT_FLOAT_EQ(static_cast<float>(birds.stdev[2]), 0.225f);
  EXPECT_EQ(models::ModelSpec::from_json(mnist_spec()).input_shape(), (std::vector<int64_t>{784}));
  // The other arch's fields are not read, and are kept.
  json mlp = mnist_spec();
  mlp["mean"] = json::array();
  EXPECT_EQ(models::ModelSpec::from_json(mlp).to_json(), mlp);
}

class HostileModelFile : public SyntheticMnistSuite {
 protected:
  // A model.pt whose weights fit `spec` as a loader without checks reads it (ResNet-18, 2
  // classes), so only the spec is hostile.
  std::string crafted(const std::string& name, const json& spec) {
    torch::manual_seed(1);
    models::ResNet m(models::ResNetOptions{"resnet18", 2});
    engine::CheckpointMeta meta;
    meta.spec = spec;
    const std::string path = out_ / (name + ".pt");
    engine::checkpoint_save(path, *m, nullptr, meta);
    return path;
  }
  std::string image() {
    const std::string path = out_ / "photo.jpg";
    cv::imwrite(path, cv::Mat(40, 50, CV_8UC3, cv::Scalar(30, 120, 200)));
    return path;
  }
};

// Before the spec was validated, "mean": [] and [0.5] crashed ctrain-score and ctrain-serve
// (SIGSEGV) or read past the end and exited 0; image_size 100000 tried to allocate 120 GB.
TEST_F(HostileModelFile, CraftedSpecIsRefusedByServeScoreAndRegistryNamingTheField) {
  const std::string photo = image();
  struct Case {
    std::string name, field;
    json spec;
  };
  std::vector<Case> cases = {{"empty_mean", "mean", birds_spec()},
                             {"short_mean", "mean", birds_spec()},
                             {"huge_image", "image_size", birds_spec()}};
  cases[0].spec["mean"] = json::array();
  cases[1].spec["mean"] = {0.5};
  cases[2].spec["image_size"] = 100000;
  for (const auto& c : cases) {
    const std::string model = crafted(c.name, c.spec);
    const auto score = run_command(bin("ctrain-score") + " --model " + model + " " + photo);
    EXPECT_NE(score.exit_code, 0) << c.name << ": " << score.output;
    EXPECT_LT(score.exit_code, 128) << c.name << " died of a signal: " << score.output;
    EXPECT_NE(score.output.find(c.field), std::string::npos) << c.name << ": " << score.output;
    EXPECT_NE(score.output.find(model), std::string::npos) << c.name << ": " << score.output;
    EXPECT_EQ(score.output.find("\"probability\""), std::string::npos) << c.name << ": " << score.output;

    const auto serve = run_command(bin("ctrain-serve") + " --port 0 --model " + model);  // refuses before listening
    EXPECT_NE(serve.exit_code, 0) << c.name << ": " << serve.output;
    EXPECT_LT(serve.exit_code, 128) << c.name << " died of a signal: " << serve.output;
    EXPECT_NE(serve.output.find(c.field), std::string::npos) << c.name << ": " << serve.output;

    const auto reg = run_command(bin("ctrain-registry") + " --registry " + (out_ / "registry") + " register " +
                                 c.name + " " + model);
    EXPECT_NE(reg.exit_code, 0) << c.name << ": " << reg.output;
    EXPECT_LT(reg.exit_code, 128) << reg.output;
    EXPECT_NE(reg.output.find(c.field), std::string::npos) << c.name << ": " << reg.output;
    EXPECT_FALSE(fs::exists(out_.path() / "registry" / c.name / "1")) << c.name << " was registered";
  }
}

TEST_F(HostileModelFile, RealMnistModelSpecRoundTripsAndLoads) {
  const auto r = run_command(mnist_on_data("--threads 1 --epochs 1 --first-layer-neurons 16 --second-layer-neurons 8 "
                                           "--no-onnx --output-dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json spec = engine::checkpoint_peek(out_ / "o/model.pt").spec;
  const models::ModelSpec s = models::ModelSpec::from_json(spec);
  EXPECT_EQ(s.to_json(), spec);
  EXPECT_EQ(s.hidden1, 16);
  EXPECT_EQ(s.hidden2, 8);
  EXPECT_EQ(apps::read_model_spec(out_ / "o/model.pt"), s);
  EXPECT_EQ(apps::load_model(out_ / "o/model.pt").spec.to_json(), spec);
  const std::string reg = bin("ctrain-registry") + " --registry " + (out_ / "registry");
  const auto ok = run_command(reg + " register mnist " + (out_ / "o/model.pt"));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
}

// ---- images cut short ----

// A JPEG of real content (noise, so the entropy-coded data is most of the file).
std::string noisy_jpeg(int height, int width, bool progressive = false) {
  cv::Mat img(height, width, CV_8UC3);
  std::mt19937 rng(5);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) img.at<cv::Vec3b>(y, x) = cv::Vec3b(rng() % 256, (x * 4) % 256, (y * 4) % 256);
  }
  std::vector<uchar> buf;
  cv::imencode(".jpg", img, buf, {cv::IMWRITE_JPEG_QUALITY, 90, cv::IMWRITE_JPEG_PROGRESSIVE, progressive ? 1 : 0});
  return std::string(buf.begin(), buf.end());
}

std::string png_of(int height, int width) {
  std::vector<uchar> buf;
  cv::imencode(".png", cv::Mat(height, width, CV_8UC3, cv::Scalar(10, 200, 90)), buf);
  return std::string(buf.begin(), buf.end());
}

TEST(HostileModelImage, WholeFilesAreNotTruncated) {
  const std::string jpeg = noisy_jpeg(64, 80);
  EXPECT_EQ(data::image_truncation(jpeg), "");
  EXPECT_EQ(data::image_truncation(noisy_jpeg(64, 80, /*progressive=*/true)), "");
  EXPECT_EQ(data::image_truncation(with_exif_orientation(jpeg, 6)), "");
  EXPECT_EQ(data::image_truncation(jpeg + std::string(100, '\x42')), "") << "bytes after EOI are ignored, as by PIL";
  EXPECT_EQ(data::image_truncation(png_of(20, 30)), "");
  EXPECT_EQ(data::image_truncation("not an image"), "");
  // No readable header: not called truncated, the decoder names what is wrong.
  EXPECT_EQ(data::image_truncation(std::string("\xff\xd8\xff\xe0", 4) + "not a jpeg at all"), "");
  const data::Image img = data::decode_bytes(jpeg + std::string(100, '\xff'), "ok.jpg");
  EXPECT_EQ(img.height, 64);
}

// A JPEG cut to 700 of its 5415 bytes was decoded with grey rows, scored (HTTP 200) and trained on.
TEST(HostileModelImage, TruncatedJpegAndPngAreRefusedByEveryDecodePath) {
  const std::string jpeg = noisy_jpeg(96, 96);
  ASSERT_GT(jpeg.size(), 3000u);
  const std::string progressive = noisy_jpeg(96, 96, /*progressive=*/true);
  ASSERT_GT(progressive.size(), 3000u);
  std::vector<std::string> cuts = {jpeg.substr(0, 700), jpeg.substr(0, jpeg.size() / 2),
                                   jpeg.substr(0, jpeg.size() - 2),  // all but the EOI marker
                                   progressive.substr(0, 2000)};
  const std::string png = png_of(40, 40);
  const std::string png_cut = png.substr(0, png.size() - 20);
  for (size_t i = 0; i < cuts.size(); ++i) {
    const std::string& cut = cuts[i];
    const std::string what = "cut" + std::to_string(i) + ".jpg";
    EXPECT_NE(data::image_truncation(cut), "") << what;
    const std::string whole = error_of([&] { data::decode_bytes(cut, what); });
    EXPECT_NE(whole.find(what + ": truncated"), std::string::npos) << whole;
    for (int reduce : {1, 2}) {
      data::ImageRegion region;
      const std::string e = error_of([&] { data::decode_jpeg_region(cut, what, reduce, 0, 0, 8, 8, &region); });
      EXPECT_NE(e.find(what + ": truncated"), std::string::npos) << "region decode: " << e;
    }
    for (auto mode : {data::Augment::kTrain, data::Augment::kEval}) {
      for (bool reduced : {true, false}) {
        data::ImageTransform t;
        t.mode = mode;
        t.size = 32;
        t.resize = 36;
        std::mt19937_64 rng(1);
        std::vector<float> out(3 * 32 * 32);
        const std::string e = error_of([&] {
          data::decode_and_transform(cut, what, t, data::DecodeOptions{reduced, 0}, rng, out.data());
        });
        EXPECT_NE(e.find(what), std::string::npos) << "decode_and_transform: " << e;
        EXPECT_NE(e.find("truncated"), std::string::npos) << "decode_and_transform: " << e;
      }
    }
  }
  EXPECT_NE(data::image_truncation(png_cut), "");
  const std::string e = error_of([&] { data::decode_bytes(png_cut, "cut.png"); });
  EXPECT_NE(e.find("cut.png: truncated"), std::string::npos) << e;
}

// --skip-bad-images keeps its meaning: a truncated file is a bad image, skipped and counted.
TEST(HostileModelImage, LoaderNamesOrSkipsATruncatedJpeg) {
  TempDir dir;
  write_image_folder(dir / "t", {"a", "b"}, 3, 4);
  const std::string jpeg = noisy_jpeg(64, 64);
  std::ofstream(dir / "t/a/cut.jpg", std::ios::binary) << jpeg.substr(0, jpeg.size() / 3);
  const auto idx = data::index_image_folder(dir / "t");
  auto run = [&](bool skip) {
    data::LoaderOptions o;
    o.batch_size = 7;
    o.workers = 0;
    o.skip_bad_images = skip;
    data::ImageTransform t;
    t.size = 32;
    data::ImageFolderSource src(idx, t, data::ShardSampler(7, 0, 1, 1, false), o);
    src.start_epoch(0);
    int64_t seen = 0;
    while (auto b = src.next()) seen += b->input.size(0);
    EXPECT_EQ(src.bad_images(), 1);
    return seen;
  };
  const std::string e = error_of([&] { run(false); });
  EXPECT_NE(e.find("cut.jpg"), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  EXPECT_EQ(run(true), 6);
}

TEST(HostileModelImage, ServingAndScoringRefuseATruncatedJpegNamingIt) {
  TempDir dir;
  const std::string model = write_birds_model(dir / "b");
  serve::Handler h(apps::load_model(model), torch::kCPU);
  const std::string jpeg = noisy_jpeg(96, 96);
  const std::string cut = jpeg.substr(0, 700);
  EXPECT_EQ(h.preprocess_image(jpeg, "whole.jpg").sizes().vec(), (std::vector<int64_t>{1, 3, 64, 64}));
  try {
    h.preprocess_image(cut, "upload.jpg");
    ADD_FAILURE() << "a truncated JPEG was preprocessed";
  } catch (const serve::BadInput& e) {  // HTTP 400
    EXPECT_NE(std::string(e.what()).find("upload.jpg: truncated"), std::string::npos) << e.what();
  }
  serve::Handler mlp(apps::load_model(write_mlp_model(dir / "m")), torch::kCPU);  // the gray path: decode_bytes
  EXPECT_THROW(mlp.preprocess_image(cut, "digit.jpg"), serve::BadInput);

  std::ofstream(dir / "cut.jpg", std::ios::binary) << cut;
  std::ofstream(dir / "whole.jpg", std::ios::binary) << jpeg;
  const auto r = run_command(bin("ctrain-score") + " --model " + model + " " + (dir / "cut.jpg") + " " + (dir / "whole.jpg"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(dir / "cut.jpg"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("truncated"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("{\"file\":\"" + (dir / "cut.jpg")), std::string::npos) << "scored: " << r.output;
  EXPECT_NE(r.output.find("{\"file\":\"" + (dir / "whole.jpg")), std::string::npos) << r.output;
}

// ---- JSON numbers that overflow a float ----

// 1e300 is a valid JSON number; as a float it is inf, and the probabilities came back NaN
// ("probability": null with HTTP 200).
TEST(HostileModelJson, NumbersNotFiniteAsFloatAreBadInputNamingTheElement) {
  TempDir dir;
  serve::Handler h(apps::load_model(write_mlp_model(dir / "m")), torch::kCPU);
  json row = std::vector<float>(784, 0.5f);
  row[3] = 1e300;
  try {
    h.preprocess_json(json::array({row}));
    ADD_FAILURE() << "1e300 was accepted";
  } catch (const serve::BadInput& e) {
    EXPECT_NE(std::string(e.what()).find("data[0][3]"), std::string::npos) << e.what();
  }
  row[3] = 0.5;
  row[700] = -4e38;  // just past FLT_MAX
  const std::string e = error_of([&] { h.preprocess_json(row); });
  EXPECT_NE(e.find("data[700]"), std::string::npos) << e;
  row[700] = 3e38;  // still a float
  const torch::Tensor ok = h.preprocess_json(row);
  EXPECT_TRUE(torch::isfinite(ok).all().item<bool>());
  EXPECT_FLOAT_EQ(ok[0][700].item<float>(), 3e38f);
}

}  // namespace
}  // namespace ctrain::testing
