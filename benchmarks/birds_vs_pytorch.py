#!/usr/bin/python3
"""ctrain-birds vs the tutorial's PyTorch pipeline (benchmarks/birds_peer.py) on the same
generated folder of camera-size JPEGs, alternating:
  1. the image pipeline alone (decode + RandomResizedCrop(224) + flip + normalise), images/s
     with 1 worker thread/process, with 1 thread (the peer transforming in its own process,
     without a DataLoader), and with --workers N;
  2. ResNet-18 training (pipeline + forward/backward/SGD), images/s, --batch-size, --threads
     intra-op threads, 1 loader worker.
Ratios are ctrain / PyTorch (higher is better). With a PyTorch 2.x --python, two more peers:
the pipeline on decode_jpeg + tensor transforms (case tensor) and training a torch.compile'd
model (case compile); --binary then names a ctrain-birds built on the same LibTorch."""
import argparse, json, os, statistics, subprocess, tempfile

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
BIRDS = os.path.join(HERE, "..", "build", "bin", "ctrain-birds")


def make_folder(root, per_class, w, h, style="photo"):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    for split in ("train", "val"):
        for c, cls in enumerate(("chicken", "turkey")):
            os.makedirs(f"{root}/{split}/{cls}", exist_ok=True)
            for i in range(per_class if split == "train" else 4):
                if style == "photo":
                    # Photo-like: blurred overlapping discs, mild sensor noise, quality 88
                    # (about 140 KB at 1024x768, as a camera photo resized for the web).
                    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
                    d = ImageDraw.Draw(img)
                    for _ in range(60):
                        x0, y0, r = rng.integers(0, w), rng.integers(0, h), rng.integers(10, max(11, w // 4))
                        d.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
                    a = np.asarray(img.filter(ImageFilter.GaussianBlur(3))).astype(np.int16)
                    a = np.clip(a + rng.integers(-10, 10, a.shape), 0, 255).astype(np.uint8)
                    Image.fromarray(a).save(f"{root}/{split}/{cls}/{i}.jpg", quality=88)
                else:
                    # Smooth gradients plus strong noise: large files, entropy decoding dominates.
                    base = np.stack([(xx * (1 + c) + i * 7) % 256, (yy * 2 + i) % 256, (xx + yy) % 256], -1)
                    img = np.clip(base + rng.integers(-25, 25, base.shape), 0, 255).astype(np.uint8)
                    Image.fromarray(img).save(f"{root}/{split}/{cls}/{i}.jpg", quality=90)


def ctrain_rates(binary, data, args, threads):
    with tempfile.TemporaryDirectory() as out:
        r = subprocess.run([binary, "--data-dir", data, "--output-dir", out, "--threads", str(threads),
                            "--checkpoint-every", "0", "--no-onnx"] + args,
                           check=True, capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
        if "--data-only" in args:
            return [float(l.split("= ")[1].split(" ")[0]) for l in r.stdout.splitlines()
                    if l.startswith("data-only")][1:]
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return [json.loads(l)["samples_per_sec"] for l in f][1:]


def peer_rates(python, data, args, threads):
    r = subprocess.run([python, os.path.join(HERE, "birds_peer.py"), "--data-dir", data,
                        "--threads", str(threads)] + args,
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
    p.add_argument("--batch-size", type=int, default=4, help="for the training comparison")
    p.add_argument("--style", choices=("photo", "noise"), default="photo",
                   help="generated JPEGs: photo-like, or gradients with strong noise (larger files)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for training (the pipeline cases use 1)")
    p.add_argument("--cases", default="pipeline,thread,workers,train",
                   help="which of pipeline,tensor,thread,workers,train,compile to run")
    p.add_argument("--binary", default=BIRDS, help="the ctrain-birds to run (build-torch2-cv/bin/... for 2.11)")
    p.add_argument("--python", default="/usr/bin/python3",
                   help="the peer's Python (scripts/install-torch-wheel.sh --python: PyTorch 2.11)")
    a = p.parse_args()
    wanted = set(a.cases.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        make_folder(f"{tmp}/pipe", a.images, a.width, a.height, a.style)
        make_folder(f"{tmp}/train", a.train_images, a.width, a.height, a.style)
        cases = [
            ("pipeline", "pipeline, 1 worker", f"{tmp}/pipe", ["--data-only", "--epochs", "3", "--workers", "1"], 1),
            # The peer without its DataLoader process: torchvision's transforms called in a loop.
            ("thread", "pipeline, 1 thread (peer in-process)", f"{tmp}/pipe",
             ["--data-only", "--epochs", "3", "--workers", "1"], 1),
            ("tensor", "pipeline, 1 worker (peer: decode_jpeg + v2 tensor transforms)", f"{tmp}/pipe",
             ["--data-only", "--epochs", "3", "--workers", "1"], 1),
            ("workers", f"pipeline, {a.workers} workers", f"{tmp}/pipe",
             ["--data-only", "--epochs", "3", "--workers", str(a.workers)], 1),
            ("train", f"ResNet-18 training, batch {a.batch_size}, {a.threads} thread(s), 1 worker", f"{tmp}/train",
             ["--epochs", "2", "--workers", "1", "--batch-size", str(a.batch_size)], a.threads),
            # The compiled peer's first epoch compiles; a third epoch keeps two measured ones.
            ("compile", f"ResNet-18 training, batch {a.batch_size}, {a.threads} thread(s), 1 worker "
             "(peer: torch.compile)", f"{tmp}/train",
             ["--epochs", "3", "--workers", "1", "--batch-size", str(a.batch_size)], a.threads),
        ]
        peer_flags = {"thread": ["--in-process"], "tensor": ["--decode", "tensor"], "compile": ["--compile"]}
        for key, name, data, args, threads in cases:
            if key not in wanted:
                continue
            c, t = [], []
            for _ in range(a.repeats):
                c += ctrain_rates(a.binary, data, args, threads)
                t += peer_rates(a.python, data, args + peer_flags.get(key, []), threads)
            rows.append((name, statistics.median(c), statistics.median(t)))
            print(f"{name}: ctrain {rows[-1][1]:.1f} images/s, PyTorch {rows[-1][2]:.1f} images/s", flush=True)
    print(f"\n{a.width}x{a.height} JPEGs ({a.style})\n")
    print("| case | ctrain images/s | PyTorch images/s | ratio ctrain/PyTorch |\n|---|---|---|---|")
    for name, c, t in rows:
        print(f"| {name} | {c:.1f} | {t:.1f} | {c / t:.2f} |")
    print(json.dumps({"benchmark": "birds_vs_pytorch", "binary": a.binary, "peer_python": a.python, "rows": [dict(case=n, ctrain=c, pytorch=t) for n, c, t in rows]}))


if __name__ == "__main__":
    main()
