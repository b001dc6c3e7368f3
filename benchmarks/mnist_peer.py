#!/usr/bin/python3
"""The PyTorch peer of ctrain-mnist: the same MLP, data, batch and SGD, written the way a
skilled user writes it (whole dataset as tensors, a randperm per epoch, tensor slicing, no
DataLoader). Prints one JSON line per epoch with the training seconds (eval excluded), so the
harness compares like with like. Under torchrun (WORLD_SIZE > 1) it is a DDP job over Gloo
with DistributedSampler's sharding: rank r takes positions r, r+W, ... of the padded
permutation; --batch-size is per rank."""
import argparse, gzip, json, os, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(folder, prefix):
    def find(stem):
        for name in (stem, stem + ".gz"):
            if os.path.exists(os.path.join(folder, name)):
                return os.path.join(folder, name)
        raise FileNotFoundError(stem)
    x = read_idx(find(prefix + "-images-idx3-ubyte"))
    y = read_idx(find(prefix + "-labels-idx1-ubyte"))
    return (torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0),
            torch.from_numpy(y.astype(np.int64)))


class Net(nn.Module):
    def __init__(self, h1, h2):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, h1), nn.Linear(h1, h2), nn.Linear(h2, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-folder", required=True)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--compile", action="store_true",
                   help="train torch.compile(model) (PyTorch 2.x; epoch 0 pays the compilation)")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    xtr, ytr = load(a.data_folder, "train")
    xte, yte = load(a.data_folder, "t10k")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    model = Net(256, 128)
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group("gloo")
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=a.learning_rate)
    if a.compile:
        model = torch.compile(model)
    n = len(xtr)
    per_rank = (n + world - 1) // world
    for epoch in range(a.epochs):
        model.train()
        g = torch.Generator().manual_seed(a.seed + epoch)
        perm = torch.randperm(n, generator=g)
        if world > 1:
            perm = torch.cat([perm, perm[:per_rank * world - n]])[rank::world]
        t0 = time.perf_counter()
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.int64)
        for i in range(0, len(perm), a.batch_size):
            idx = perm[i:i + a.batch_size]
            x, y = xtr[idx], ytr[idx]
            opt.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(y)
                correct += (logits.argmax(1) == y).sum()
        seconds = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        if rank == 0:
            print(json.dumps({"epoch": epoch, "seconds": seconds, "samples_per_sec": per_rank * world / seconds,
                              "train_loss": loss_sum.item() / len(perm),
                              "training_acc": correct.item() / len(perm), "validation_acc": acc}),
                  flush=True)


if __name__ == "__main__":
    main()
