#!/usr/bin/env python3
"""PyTorch peers for benchmarks/gpu_bench.py, written the way a skilled user writes them on a GPU.

mnist-eager  the MNIST DNN (784-256-128-10, SGD lr 0.01, batch 64), the whole dataset on the
             GPU, a randperm per epoch made on the GPU, tensor indexing, no DataLoader.
mnist-graph  the same with the whole step (forward, backward, SGD) captured once as a CUDA
             graph and replayed per batch (static input buffers; the last, short batch runs
             eagerly). This is the strongest peer.
resnet       torchvision ResNet (2 classes, as ctrain-birds --synthetic-data), SGD momentum 0.9,
             one random batch on the GPU (torchvision FakeData's shape), optional bf16 autocast,
             channels-last and torch.compile.
Prints one JSON line per epoch (mnist: training seconds) or per timed run (resnet: images/s).
--device cpu runs the same code on the CPU (scripts/node-check.sh --dry-run: the script's
commands are checked on a CPU machine; mnist-graph is CUDA only)."""
import argparse, gzip, json, os, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * data[3]).reshape(dims)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def load(folder, prefix, device):
    def find(stem):
        for name in (stem, stem + ".gz"):
            if os.path.exists(os.path.join(folder, name)):
                return os.path.join(folder, name)
        raise FileNotFoundError(os.path.join(folder, stem))
    x = read_idx(find(prefix + "-images-idx3-ubyte"))
    y = read_idx(find(prefix + "-labels-idx1-ubyte"))
    return (torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0).to(device),
            torch.from_numpy(y.astype(np.int64)).to(device))


def mnist(a, graph):
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    if graph and dev.type != "cuda":
        raise SystemExit("gpu_peers: mnist-graph needs --device cuda (CUDA graphs)")
    x, y = load(a.data_folder, "train", dev)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    b, n = a.batch_size, len(x)

    def step(xb, yb):
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.detach()

    if graph:
        sx, sy = x[:b].clone(), y[:b].clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up on a side stream, as the CUDA graphs guide says
            for _ in range(3):
                step(sx, sy)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            static_loss = step(sx, sy)
    for epoch in range(a.epochs):
        sync(dev)
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=dev)
        loss_sum = torch.zeros((), device=dev)
        for i in range(0, n, b):
            idx = perm[i:i + b]
            if graph and len(idx) == b:
                torch.index_select(x, 0, idx, out=sx)
                torch.index_select(y, 0, idx, out=sy)
                g.replay()
                loss_sum += static_loss
            else:
                loss_sum += step(x[idx], y[idx])
        loss = loss_sum.item() * b / n  # the one host sync of the epoch
        seconds = time.perf_counter() - t0
        print(json.dumps({"epoch": epoch, "seconds": seconds, "train_loss": loss}), flush=True)


def resnet(a):
    import torchvision
    torch.backends.cudnn.benchmark = True
    dev = torch.device(a.device)
    model = getattr(torchvision.models, a.arch)(num_classes=2).to(dev)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    x = torch.randn(a.batch_size, 3, a.image_size, a.image_size, device=dev).to(memory_format=fmt)
    y = torch.randint(0, 2, (a.batch_size,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.amp == "bf16"):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    if a.compile:
        step = torch.compile(step)
    for _ in range(a.warmup):
        step()
    for run in range(a.runs):
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        sync(dev)
        s = time.perf_counter() - t0
        print(json.dumps({"run": run, "images_per_sec": a.steps * a.batch_size / s}), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("which", choices=["mnist-eager", "mnist-graph", "resnet"])
    p.add_argument("--data-folder")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--amp", default="off", choices=["off", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--device", default="cuda")
    p.add_argument("--image-size", type=int, default=224)
    a = p.parse_args()
    if a.which == "resnet":
        resnet(a)
    else:
        mnist(a, a.which == "mnist-graph")


if __name__ == "__main__":
    main()
