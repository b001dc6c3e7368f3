#!/usr/bin/python3
"""Data-parallel scaling on this machine: MNIST DNN samples/s with 1 rank (batch 64) and with
2 ranks (batch 32 each: the same global batch), for ctrain (ctrain-launch + Gloo) and for
PyTorch's Python DDP (Gloo, torchrun's variables from ctrain-launch, benchmarks/mnist_peer.py), alternating.
Scaling efficiency = samples/s(2 ranks) / (2 x samples/s(1 rank))."""
import argparse, json, os, statistics, subprocess, tempfile

from bench_common import BIN, HERE, free_port


def ctrain(a, nproc):
    with tempfile.TemporaryDirectory() as out:
        cmd = [os.path.join(BIN, "ctrain-mnist"), "--data-folder", a.data_folder, "--epochs",
               str(a.epochs), "--batch-size", str(64 // nproc), "--output-dir", out,
               "--checkpoint-every", "0"]
        if nproc > 1:
            cmd = [os.path.join(BIN, "ctrain-launch"), "--nproc-per-node", str(nproc),
                   "--master-port", str(free_port())] + cmd
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=a.env)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return [json.loads(l)["samples_per_sec"] for l in f][1:]


def peer(a, nproc):
    cmd = ["/usr/bin/python3", os.path.join(HERE, "mnist_peer.py"), "--data-folder", a.data_folder,
           "--epochs", str(a.epochs), "--batch-size", str(64 // nproc)]
    if nproc > 1:
        # Debian's torch.distributed.run (1.13 on Python 3.11) crashes in its own redirect
        # handling; ctrain-launch sets the same torchrun variables, and using one launcher for
        # both sides keeps the comparison fair.
        cmd = [os.path.join(BIN, "ctrain-launch"), "--nproc-per-node", str(nproc),
               "--master-port", str(free_port())] + cmd
    r = subprocess.run(cmd, check=True, capture_output=True, text=True, env=a.env)
    lines = [l.split("] ", 1)[-1] for l in r.stdout.splitlines()]  # drop "[rank 0] " prefixes
    return [json.loads(l)["samples_per_sec"] for l in lines if l.startswith("{")][1:]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-folder", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    # One intra-op thread per process in every configuration (torchrun's default for N > 1).
    a.env = dict(os.environ, OMP_NUM_THREADS="1")
    res = {k: [] for k in ("ctrain1", "ctrain2", "torch1", "torch2")}
    for r in range(a.repeats):
        res["ctrain1"] += ctrain(a, 1)
        res["torch1"] += peer(a, 1)
        res["ctrain2"] += ctrain(a, 2)
        res["torch2"] += peer(a, 2)
        print(f"repeat {r}: " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in res.items()), flush=True)
    m = {k: statistics.median(v) for k, v in res.items()}
    print("\n| impl | 1 rank samples/s | 2 ranks samples/s | scaling efficiency |")
    print("|---|---|---|---|")
    for impl in ("ctrain", "torch"):
        print(f"| {impl} | {m[impl + '1']:.0f} | {m[impl + '2']:.0f} | {m[impl + '2'] / (2 * m[impl + '1']):.2f} |")
    print(f"ctrain/torch samples/s: 1 rank {m['ctrain1'] / m['torch1']:.2f}x, 2 ranks {m['ctrain2'] / m['torch2']:.2f}x")
    print(json.dumps({"benchmark": "ddp_scaling", **m}))


if __name__ == "__main__":
    main()
