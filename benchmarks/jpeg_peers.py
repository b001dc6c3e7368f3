#!/usr/bin/env python3
"""A camera-like JPEG folder and torchvision's JPEG input pipelines, for benchmarks/gpu_bench.py.

make        writes DIR/{train,val}/<class>/*.jpg: baseline, 4:2:0, quality 90 JPEGs (PIL) with
            smooth gradients, hard edges, texture and fresh noise in each file, so they compress
            like photos (about 100-250 KB at 1024x768). A few distinct base images are drawn
            once and each file varies one cheaply (roll, flip, colour shift, new noise), in
            worker processes: 2,304 files of 1024x768 take seconds on 16 cores.
dataloader  the tutorial's input pipeline: torchvision ImageFolder + RandomResizedCrop(224),
            RandomHorizontalFlip, ToTensor, Normalize (ImageNet) in a torch DataLoader (batch
            256, shuffled, --workers processes, persistent, pin_memory on CUDA); each batch is
            moved to the device (non_blocking).
nvjpeg      torchvision's nvJPEG peer: per batch of 256 files, torchvision.io.read_file per
            file (in the loop, every epoch; --preread reads them all once before timing), one
            batched torchvision.io.decode_jpeg(list, device='cuda'), then per image a
            RandomResizedCrop (torchvision's own parameter draw; the crop converted to float and
            resized with transforms.v2.functional.resize, antialias=True) and a random flip,
            stacked, and normalized (ImageNet) as one batch. --device cpu decodes on the CPU.
Both peers run --epochs epochs over DIR/train and time every epoch after the first (the first
warms up: worker processes, nvJPEG handles, the caching allocator, the page cache), each from
its first batch request to the device synchronize after its last batch, and print one
JSON line: {"images_per_sec": timed images / timed seconds, "epochs": [per-epoch images/s], ...}.

    python3 benchmarks/jpeg_peers.py make --root /tmp/jpegs --train 2048 --val 256
    python3 benchmarks/jpeg_peers.py nvjpeg --root /tmp/jpegs
    python3 benchmarks/jpeg_peers.py dataloader --root /tmp/jpegs --workers 16

make_folder() is importable (gpu_bench.py generates its folder with it)."""
import argparse, json, os, sys, time

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ---------------------------------------------------------------- the JPEG folder

_BASES = None  # the base images (uint8 HxWx3), set in the parent before the pool forks, or by _init


def _smooth(rng, h, w, cells, amp):
    """Low-frequency colour field: a cells-sized random image upsampled bicubically to h x w."""
    from PIL import Image
    ch, cw = max(2, cells * h // max(h, w)), max(2, cells * w // max(h, w))
    small = rng.uniform(-amp, amp, size=(ch, cw, 3)).astype(np.float32)
    out = np.empty((h, w, 3), np.float32)
    for c in range(3):
        out[..., c] = np.asarray(Image.fromarray(small[..., c], mode="F").resize((w, h), Image.BICUBIC))
    return out


def _base_image(seed, h, w):
    """One photo-like scene: a sky-to-ground gradient, large smooth colour blobs, mid-frequency
    texture, and hard-edged shapes (rectangles, ellipses, polygons, lines) with shading."""
    from PIL import Image, ImageDraw, ImageFilter
    rng = np.random.default_rng(seed)
    top, bottom = rng.uniform(40, 220, 3), rng.uniform(20, 200, 3)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = (top * (1 - t) + bottom * t).astype(np.float32) * np.ones((1, w, 1), np.float32)
    img += _smooth(rng, h, w, 6, 50.0)     # large, soft colour variation (lighting, objects)
    img += _smooth(rng, h, w, 40, 18.0)    # mid-frequency texture (grass, feathers, fabric)
    img += _smooth(rng, h, w, 160, 9.0)    # fine texture
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    s = min(h, w)
    for _ in range(int(rng.integers(10, 22))):
        col = tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(150, 256)),)
        x0, y0 = int(rng.integers(-s // 4, w)), int(rng.integers(-s // 4, h))
        x1, y1 = x0 + int(rng.integers(s // 16, s // 2)), y0 + int(rng.integers(s // 16, s // 2))
        kind = rng.integers(0, 4)
        if kind == 0:
            d.rectangle((x0, y0, x1, y1), fill=col)
        elif kind == 1:
            d.ellipse((x0, y0, x1, y1), fill=col)
        elif kind == 2:
            pts = [(int(rng.integers(x0, x1)), int(rng.integers(y0, y1))) for _ in range(int(rng.integers(3, 7)))]
            d.polygon(pts, fill=col)
        else:
            d.line((x0, y0, x1, y1), fill=col, width=int(rng.integers(2, max(3, s // 60))))
    # shapes are shaded like the rest of the scene: modulate them by a soft field
    shade = Image.fromarray(np.clip(128 + _smooth(rng, h, w, 10, 60.0)[..., 0], 0, 255).astype(np.uint8))
    alpha = np.asarray(layer)[..., 3].astype(np.float32) * (np.asarray(shade, np.float32) / 255.0 + 0.5) / 1.5
    layer.putalpha(Image.fromarray(np.clip(alpha, 0, 255).astype(np.uint8)))
    pil = Image.alpha_composite(pil.convert("RGBA"), layer).convert("RGB")
    pil = pil.filter(ImageFilter.GaussianBlur(0.6))  # a lens: edges stay hard but not aliased
    return np.asarray(pil)


def _init(bases):
    global _BASES
    _BASES = bases


def _write_one(job):
    """One file: a base image rolled, maybe flipped, colour-shifted, with fresh sensor noise."""
    from PIL import Image
    path, base, seed, noise = job
    rng = np.random.default_rng(seed)
    b = _BASES[base]
    h, w = b.shape[:2]
    img = np.roll(b, (int(rng.integers(0, h)), int(rng.integers(0, w))), axis=(0, 1))
    if rng.integers(0, 2):
        img = img[:, ::-1]
    gain = rng.uniform(0.8, 1.15, 3).astype(np.float32)
    shift = rng.uniform(-20, 20, 3).astype(np.float32)
    out = img.astype(np.float32) * gain + shift
    out += rng.standard_normal((h, w, 3), dtype=np.float32) * noise
    Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(
        path, "JPEG", quality=90, subsampling=2, optimize=False, progressive=False)
    return os.path.getsize(path)


def make_folder(root, n_train, n_val, height=768, width=1024, classes=("chicken", "turkey"), seed=0,
                workers=None, bases=8, noise=3.0):
    """Write root/{train,val}/<class>/<class>_<i>.jpg: n_train and n_val baseline 4:2:0 quality-90
    JPEGs of height x width, classes taking turns. Returns {"files", "bytes", "seconds"}."""
    import multiprocessing as mp
    t0 = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    jobs = []
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
        for i in range(n):
            c = classes[i % len(classes)]
            k = len(jobs)
            jobs.append((os.path.join(root, split, c, f"{c}_{i:05d}.jpg"), k % bases, seed * 1_000_003 + k + 1, noise))
    seeds = [seed * 7919 + b for b in range(bases)]
    if workers <= 1 or len(jobs) < 8:
        _init([_base_image(s, height, width) for s in seeds])
        sizes = [_write_one(j) for j in jobs]
    else:
        fork = "fork" in mp.get_all_start_methods()
        ctx = mp.get_context("fork" if fork else None)
        with ctx.Pool(min(workers, bases)) as pool:  # the base images in parallel too
            base_imgs = pool.starmap(_base_image, [(s, height, width) for s in seeds])
        if fork:  # the workers inherit the bases; nothing is pickled
            _init(base_imgs)
            pool_args = {}
        else:
            pool_args = {"initializer": _init, "initargs": (base_imgs,)}
        with ctx.Pool(workers, **pool_args) as pool:
            sizes = pool.map(_write_one, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
    return {"files": len(jobs), "bytes": int(sum(sizes)), "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------- the peers


def _sync(dev):
    import torch
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _report(name, a, per_epoch, images, seconds, **extra):
    print(json.dumps({"peer": name, "images_per_sec": images / seconds, "epochs": per_epoch,
                      "timed_images": images, "timed_seconds": seconds, "batch_size": a.batch_size,
                      "image_size": a.image_size, "device": a.device, **extra}), flush=True)


def _timed_epochs(a, dev, epoch_batches):
    """Runs a.epochs epochs of epoch_batches() (a generator of (x, y) on dev); epoch 0 warms up.
    Returns (images/s of each later epoch, their images, their seconds), synchronized."""
    per_epoch, images, seconds = [], 0, 0.0
    for epoch in range(a.epochs):
        _sync(dev)
        t0 = time.perf_counter()
        n = 0
        for x, _ in epoch_batches():
            n += x.size(0)
        _sync(dev)
        s = time.perf_counter() - t0
        if epoch > 0:
            per_epoch.append(n / s)
            images, seconds = images + n, seconds + s
    return per_epoch, images, seconds


def dataloader(a):
    import torch
    from torchvision import datasets, transforms
    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    tf = transforms.Compose([transforms.RandomResizedCrop(a.image_size), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ds = datasets.ImageFolder(os.path.join(a.root, "train"), tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=a.workers,
                                         pin_memory=dev.type == "cuda", persistent_workers=a.workers > 0)
    def epoch_batches():
        for x, y in loader:
            yield x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)

    # epoch 0 starts the worker processes and warms the page cache
    per_epoch, images, seconds = _timed_epochs(a, dev, epoch_batches)
    _report("dataloader", a, per_epoch, images, seconds, workers=a.workers)


def nvjpeg(a):
    import torch
    import torchvision
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms import RandomResizedCrop
    from torchvision.transforms.v2 import functional as F
    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    ds = torchvision.datasets.ImageFolder(os.path.join(a.root, "train"))  # only its file list
    paths = [p for p, _ in ds.samples]
    labels = torch.tensor([c for _, c in ds.samples])
    data = [read_file(p) for p in paths] if a.preread else None
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    size = [a.image_size, a.image_size]
    scale, ratio = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)

    def batch(idx):
        files = [data[i] for i in idx] if data is not None else [read_file(paths[i]) for i in idx]
        imgs = decode_jpeg(files, mode=ImageReadMode.RGB, device=dev)  # one batched nvJPEG call on CUDA
        out = []
        for img in imgs:
            top, left, h, w = RandomResizedCrop.get_params(img, scale, ratio)
            x = F.resize(img[:, top:top + h, left:left + w].float(), size, antialias=True)
            if torch.rand(1).item() < 0.5:
                x = F.horizontal_flip(x)
            out.append(x)
        x = torch.stack(out).div_(255.0).sub_(mean).div_(std)
        return x, labels[idx].to(dev, non_blocking=True)

    def epoch_batches():
        perm = torch.randperm(len(paths)).tolist()
        for i in range(0, len(perm), a.batch_size):
            yield batch(perm[i:i + a.batch_size])

    # epoch 0 creates the nvJPEG handles and grows the caching allocator
    per_epoch, images, seconds = _timed_epochs(a, dev, epoch_batches)
    _report("nvjpeg", a, per_epoch, images, seconds,
            file_read="pre-read once before timing" if a.preread else "torchvision.io.read_file in the loop")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("which", choices=["make", "dataloader", "nvjpeg"])
    p.add_argument("--root", required=True, help="the folder with train/ and val/")
    p.add_argument("--train", type=int, default=2048, help="make: training images")
    p.add_argument("--val", type=int, default=256, help="make: validation images")
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=16, help="make: processes; dataloader: DataLoader workers")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=3, help="the first warms up; the others are timed")
    p.add_argument("--preread", action="store_true", help="nvjpeg: read the files once before timing")
    a = p.parse_args()
    if a.which == "make":
        r = make_folder(a.root, a.train, a.val, a.height, a.width, seed=a.seed, workers=a.workers)
        r["mean_kb"] = r["bytes"] / max(1, r["files"]) / 1024
        print(json.dumps({"root": a.root, "height": a.height, "width": a.width, **r}), flush=True)
        return
    if a.epochs < 2:
        sys.exit("jpeg_peers: --epochs must be at least 2 (the first only warms up)")
    (dataloader if a.which == "dataloader" else nvjpeg)(a)


if __name__ == "__main__":
    main()
