#include "export/onnx.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <functional>
#include <set>

#include "core/error.h"
#include "core/fs.h"

namespace ctrain::exporter {

bool onnx_available() { return true; }

namespace {

// Builds the graph node by node; every tensor it references must exist in the module.
class GraphBuilder {
 public:
  GraphBuilder(onnx::GraphProto* g, std::map<std::string, torch::Tensor> tensors)
      : g_(g), tensors_(std::move(tensors)) {}

  // Adds the named module tensor as an initializer (once) and returns its name.
  std::string weight(const std::string& name) {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      throw Error("ONNX export: the model has no tensor '" + name + "'",
                  "the spec's arch does not match the module's layers");
    }
    if (added_.insert(name).second) {
      const torch::Tensor t = it->second.detach().to(torch::kCPU, torch::kFloat32).contiguous();
      onnx::TensorProto* init = g_->add_initializer();
      init->set_name(name);
      init->set_data_type(onnx::TensorProto::FLOAT);
      for (auto d : t.sizes()) init->add_dims(d);
      init->set_raw_data(std::string(static_cast<const char*>(t.data_ptr()), t.numel() * sizeof(float)));
    }
    return name;
  }

  std::string node(const std::string& op, const std::vector<std::string>& inputs,
                   const std::string& name, const std::function<void(onnx::NodeProto*)>& attrs = {}) {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const auto& i : inputs) n->add_input(i);
    n->add_output(name);
    if (attrs) attrs(n);
    return name;
  }

  static void ints(onnx::NodeProto* n, const std::string& key, std::vector<int64_t> v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
  }
  static void integer(onnx::NodeProto* n, const std::string& key, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void real(onnx::NodeProto* n, const std::string& key, float v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }

  const torch::Tensor& tensor(const std::string& name) const { return tensors_.at(name); }
  bool was_added(const std::string& name) const { return added_.count(name) > 0; }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }

 private:
  onnx::GraphProto* g_;
  std::map<std::string, torch::Tensor> tensors_;
  std::set<std::string> added_;
};

std::string gemm(GraphBuilder& b, const std::string& x, const std::string& layer,
                 const std::string& out) {
  return b.node("Gemm", {x, b.weight(layer + ".weight"), b.weight(layer + ".bias")}, out,
                [](onnx::NodeProto* n) { GraphBuilder::integer(n, "transB", 1); });
}

std::string relu(GraphBuilder& b, const std::string& x, const std::string& name) {
  return b.node("Relu", {x}, name);
}

// Conv (no bias, as torchvision's) then BatchNormalization in inference form. Strides are not
// in the weights: the caller knows them from torchvision's layout.
std::string conv_bn(GraphBuilder& b, const std::string& x, const std::string& conv,
                    const std::string& bn, int64_t stride) {
  const int64_t k = b.tensor(conv + ".weight").size(2);
  const std::string c = b.node("Conv", {x, b.weight(conv + ".weight")}, conv, [&](onnx::NodeProto* n) {
    GraphBuilder::ints(n, "kernel_shape", {k, k});
    GraphBuilder::ints(n, "strides", {stride, stride});
    GraphBuilder::ints(n, "pads", {k / 2, k / 2, k / 2, k / 2});
  });
  return b.node("BatchNormalization",
                {c, b.weight(bn + ".weight"), b.weight(bn + ".bias"), b.weight(bn + ".running_mean"),
                 b.weight(bn + ".running_var")},
                bn, [](onnx::NodeProto* n) { GraphBuilder::real(n, "epsilon", 1e-5f); });
}

std::string mlp_graph(GraphBuilder& b, const std::string& input) {
  std::string h = relu(b, gemm(b, input, "fc1", "fc1"), "relu1");
  h = relu(b, gemm(b, h, "fc2", "fc2"), "relu2");
  return gemm(b, h, "fc3", "logits");
}

// torchvision's ResNet: the block layout (basic or bottleneck, blocks per layer) is read off
// the parameter names, so any depth built from those blocks exports.
std::string resnet_graph(GraphBuilder& b, const std::string& input) {
  std::string h = relu(b, conv_bn(b, input, "conv1", "bn1", 2), "relu");
  h = b.node("MaxPool", {h}, "maxpool", [](onnx::NodeProto* n) {
    GraphBuilder::ints(n, "kernel_shape", {3, 3});
    GraphBuilder::ints(n, "strides", {2, 2});
    GraphBuilder::ints(n, "pads", {1, 1, 1, 1});
  });
  const bool bottleneck = b.has("layer1.0.conv3.weight");
  for (int layer = 1; layer <= 4; ++layer) {
    for (int block = 0;; ++block) {
      const std::string p = "layer" + std::to_string(layer) + "." + std::to_string(block) + ".";
      if (!b.has(p + "conv1.weight")) break;
      const int64_t stride = layer > 1 && block == 0 ? 2 : 1;
      std::string o;
      if (bottleneck) {
        o = relu(b, conv_bn(b, h, p + "conv1", p + "bn1", 1), p + "relu1");
        o = relu(b, conv_bn(b, o, p + "conv2", p + "bn2", stride), p + "relu2");
        o = conv_bn(b, o, p + "conv3", p + "bn3", 1);
      } else {
        o = relu(b, conv_bn(b, h, p + "conv1", p + "bn1", stride), p + "relu1");
        o = conv_bn(b, o, p + "conv2", p + "bn2", 1);
      }
      const std::string identity = b.has(p + "downsample.0.weight")
                                       ? conv_bn(b, h, p + "downsample.0", p + "downsample.1", stride)
                                       : h;
      h = relu(b, b.node("Add", {o, identity}, p + "add"), p + "relu_out");
    }
  }
  h = b.node("GlobalAveragePool", {h}, "avgpool");
  h = b.node("Flatten", {h}, "flatten", [](onnx::NodeProto* n) { GraphBuilder::integer(n, "axis", 1); });
  return gemm(b, h, "fc", "logits");
}

void add_io(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = tt->mutable_shape();
  shape->add_dim()->set_dim_param("batch");  // dynamic batch
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

void add_meta(onnx::ModelProto* m, const std::string& k, const std::string& v) {
  auto* p = m->add_metadata_props();
  p->set_key(k);
  p->set_value(v);
}

}  // namespace

void export_onnx(torch::nn::Module& module, const nlohmann::json& spec, const std::string& path,
                 const OnnxOptions& options) {
  // Loaders hand over a spec validated by models::ModelSpec::from_json; export/ does not link
  // models/, so it reads the fields defensively all the same (no nlohmann type_error escapes).
  const std::string arch = spec.contains("arch") && spec["arch"].is_string() ? spec["arch"].get<std::string>() : "";
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& p : module.named_parameters()) tensors[p.key()] = p.value();
  for (const auto& p : module.named_buffers()) tensors[p.key()] = p.value();

  onnx::ModelProto model;
  model.set_ir_version(8);  // the IR of opset 17
  model.set_producer_name("ctrain");
  model.set_producer_version("0.1.0");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(options.opset);
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name("ctrain_" + arch);
  GraphBuilder b(g, tensors);
  std::vector<int64_t> in_dims;
  std::string logits;
  if (arch == "mlp") {
    in_dims = {tensors.at("fc1.weight").size(1)};
    logits = mlp_graph(b, "input");
  } else if (arch.rfind("resnet", 0) == 0) {
    const nlohmann::json size_field = spec.contains("image_size") ? spec["image_size"] : nlohmann::json(224);
    if (!size_field.is_number_integer() || size_field.get<int64_t>() < 1 || size_field.get<int64_t>() > 65536) {
      throw Error("ONNX export: the spec's image_size is " +
                  size_field.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "; it must be an integer in 1..65536");
    }
    const int64_t size = size_field.get<int64_t>();
    in_dims = {3, size, size};
    logits = resnet_graph(b, "input");
  } else {
    throw Error("ONNX export: cannot express architecture '" + arch + "'",
                "the exporter knows mlp and torchvision-style resnets");
  }
  // Every tensor must have been used: a layer the exporter does not map would otherwise be
  // silently dropped from the graph.
  std::string unused;
  for (const auto& [name, t] : tensors) {
    const bool counter = name.size() > 19 && name.compare(name.size() - 19, 19, "num_batches_tracked") == 0;
    if (!counter && !b.was_added(name)) unused += " " + name;
  }
  if (!unused.empty()) {
    throw Error("ONNX export: layer(s) with no ONNX mapping in " + arch + ":" + unused,
                "the exporter supports Linear, Conv2d, BatchNorm2d, ReLU, MaxPool, residual Add, pooling");
  }
  add_io(g->add_input(), "input", in_dims);
  add_io(g->add_output(), "logits", {tensors.at(arch == "mlp" ? "fc3.bias" : "fc.bias").size(0)});
  add_meta(&model, "arch", arch);
  add_meta(&model, "ctrain_version", "0.1.0");
  for (const char* key : {"classes", "mean", "std"}) {
    if (spec.contains(key)) add_meta(&model, key, spec[key].dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  add_meta(&model, "input_size", nlohmann::json(in_dims).dump());
  for (const auto& [k, v] : options.metadata) add_meta(&model, k, v);
  try {
    onnx::checker::check_model(model);
    onnx::shape_inference::InferShapes(model);
  } catch (const std::exception& e) {
    throw Error(std::string("ONNX export: the graph fails onnx::checker: ") + e.what());
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw Error("ONNX export: cannot serialise the model");
  write_file_atomic(path, bytes);
}

}  // namespace ctrain::exporter
