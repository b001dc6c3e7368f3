#!/usr/bin/python3
"""The Python peer of ctrain-serve, built the way the reference deploys: a Flask app around the
sample's scoring script (init() loads the model once; run() takes {"data": ...} JSON, runs the
model under no_grad, and returns the label and probability of a softmax). For images it
applies the birds eval transform with PIL + torchvision (Resize 256, CenterCrop 224, ToTensor,
Normalize). Weights are random: throughput does not depend on them. --compile serves
torch.compile(model) (PyTorch 2.x), compiled by one warm-up request before the port opens."""
import argparse, io, json

import torch
import torch.nn as nn
import torchvision
from flask import Flask, request
from PIL import Image
from torchvision import transforms

app = Flask(__name__)
model, classes = None, None
eval_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                              transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def init(kind, compile_model=False):
    global model, classes
    if kind == "mnist":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
        classes = [str(i) for i in range(10)]
        example = torch.zeros(1, 784)
    else:
        model = torchvision.models.resnet18(num_classes=2)
        classes = ["chicken", "turkey"]
        example = torch.zeros(1, 3, 224, 224)
    model.eval()
    if compile_model:
        model = torch.compile(model)
        run(example)  # compiles now, not in the first client's request


def run(input_data):
    with torch.no_grad():
        output = model(input_data)
        pred_probs = nn.Softmax(dim=1)(output).numpy()
        index = torch.argmax(output, 1).numpy()
        return [{"label": classes[i], "probability": float(pred_probs[k][i])} for k, i in enumerate(index)]


@app.route("/score", methods=["POST"])
def score():
    if request.mimetype == "application/json":
        x = torch.tensor(json.loads(request.get_data())["data"])
        if x.dim() == 1:
            x = x.unsqueeze(0)
    else:
        x = eval_tf(Image.open(io.BytesIO(request.get_data())).convert("RGB")).unsqueeze(0)
    return {"predictions": run(x)}


@app.route("/health")
def health():
    return {"status": "ok"}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["mnist", "birds"], required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--compile", action="store_true", help="serve torch.compile(model)")
    a = p.parse_args()
    init(a.model, a.compile)
    app.run(host="127.0.0.1", port=a.port, threaded=True)
