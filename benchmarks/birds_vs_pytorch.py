#!/usr/bin/python3
"""ctrain-birds vs the tutorial's PyTorch pipeline (benchmarks/birds_peer.py) on the same
generated folder of camera-size JPEGs, alternating:
  1. the image pipeline alone (decode + RandomResizedCrop(224) + flip + normalise), images/s
     with 1 worker thread/process and with --workers N;
  2. ResNet-18 training (pipeline + forward/backward/SGD), images/s, batch 4, 1 worker.
Ratios are ctrain / PyTorch (higher is better)."""
import argparse, json, os, statistics, subprocess, tempfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
BIRDS = os.path.join(HERE, "..", "build", "bin", "ctrain-birds")


def make_folder(root, per_class, w, h):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    for split in ("train", "val"):
        for c, cls in enumerate(("chicken", "turkey")):
            os.makedirs(f"{root}/{split}/{cls}", exist_ok=True)
            for i in range(per_class if split == "train" else 4):
                # Smooth gradients plus noise: JPEG sizes like photos, not like flat colour.
                base = np.stack([(xx * (1 + c) + i * 7) % 256, (yy * 2 + i) % 256, (xx + yy) % 256], -1)
                img = np.clip(base + rng.integers(-25, 25, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(f"{root}/{split}/{cls}/{i}.jpg", quality=90)


def ctrain_rates(data, args):
    with tempfile.TemporaryDirectory() as out:
        r = subprocess.run([BIRDS, "--data-dir", data, "--output-dir", out, "--threads", "1",
                            "--checkpoint-every", "0"] + args,
                           check=True, capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
        if "--data-only" in args:
            return [float(l.split("= ")[1].split(" ")[0]) for l in r.stdout.splitlines()
                    if l.startswith("data-only")][1:]
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return [json.loads(l)["samples_per_sec"] for l in f][1:]


def peer_rates(data, args):
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "birds_peer.py"), "--data-dir", data] + args,
                       check=True, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return [json.loads(l)["images_per_sec"] for l in r.stdout.splitlines() if l.startswith("{")][1:]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=60, help="training images per class")
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=1200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--train-images", type=int, default=24, help="per class, for the training comparison")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        make_folder(f"{tmp}/pipe", a.images, a.width, a.height)
        make_folder(f"{tmp}/train", a.train_images, a.width, a.height)
        cases = [
            ("pipeline, 1 worker", f"{tmp}/pipe", ["--data-only", "--epochs", "3", "--workers", "1"]),
            (f"pipeline, {a.workers} workers", f"{tmp}/pipe", ["--data-only", "--epochs", "3", "--workers", str(a.workers)]),
            ("ResNet-18 training, batch 4, 1 worker", f"{tmp}/train", ["--epochs", "2", "--workers", "1", "--batch-size", "4"]),
        ]
        for name, data, args in cases:
            c, t = [], []
            for _ in range(a.repeats):
                c += ctrain_rates(data, args)
                t += peer_rates(data, args)
            rows.append((name, statistics.median(c), statistics.median(t)))
            print(f"{name}: ctrain {rows[-1][1]:.1f} images/s, PyTorch {rows[-1][2]:.1f} images/s", flush=True)
    print(f"\n{a.width}x{a.height} JPEGs (quality 90)\n")
    print("| case | ctrain images/s | PyTorch images/s | ratio ctrain/PyTorch |\n|---|---|---|---|")
    for name, c, t in rows:
        print(f"| {name} | {c:.1f} | {t:.1f} | {c / t:.2f} |")
    print(json.dumps({"benchmark": "birds_vs_pytorch", "rows": [dict(case=n, ctrain=c, pytorch=t) for n, c, t in rows]}))


if __name__ == "__main__":
    main()
