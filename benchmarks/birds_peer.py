#!/usr/bin/python3
"""The PyTorch peer of ctrain-birds: the transfer-learning tutorial's pipeline and training
loop (torchvision ImageFolder + DataLoader with PIL decoding, RandomResizedCrop, flip,
Normalize; ResNet-18, SGD momentum 0.9). --data-only iterates the training loader alone;
--in-process transforms the samples in this process without a DataLoader (one thread).
--decode tensor is PyTorch 2.x's faster path: torchvision.io.decode_jpeg on the file's bytes and
the v2 transforms on uint8 tensors (antialiased RandomResizedCrop, flip, ToDtype, Normalize)
instead of PIL. --compile trains torch.compile(model) (the first epoch pays the compilation).
Prints one JSON line per epoch with images/s of the training part."""
import argparse, json, time

import torch
import torch.nn as nn
import torchvision
from torchvision import transforms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--data-only", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the training process")
    p.add_argument("--in-process", action="store_true",
                   help="with --data-only: transform the samples in this process, one by one (no DataLoader)")
    p.add_argument("--decode", choices=("pil", "tensor"), default="pil",
                   help="pil: the tutorial's PIL pipeline; tensor: decode_jpeg + v2 tensor transforms")
    p.add_argument("--compile", action="store_true", help="train torch.compile(model) (PyTorch 2.x)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    if a.decode == "pil":
        tf = transforms.Compose([
            transforms.RandomResizedCrop(a.image_size), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(mean, std)])
        ds = torchvision.datasets.ImageFolder(a.data_dir + "/train", tf)
    else:
        from torchvision.io import decode_jpeg, read_file
        from torchvision.transforms import v2
        tf = v2.Compose([
            v2.RandomResizedCrop(a.image_size, antialias=True), v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
        ds = torchvision.datasets.ImageFolder(a.data_dir + "/train", tf,
                                              loader=lambda path: decode_jpeg(read_file(path)))
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch_size, shuffle=True,
                                         num_workers=a.workers, persistent_workers=a.workers > 0)
    model = torchvision.models.resnet18(num_classes=len(ds.classes))
    if a.compile:
        model = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    if a.in_process:  # the pipeline per thread: no DataLoader worker process, no collation
        for epoch in range(a.epochs):
            order = torch.randperm(len(ds)).tolist()
            t0 = time.perf_counter()
            for i in order:
                ds[i]
            s = time.perf_counter() - t0
            print(json.dumps({"epoch": epoch, "images": len(order), "seconds": s,
                              "images_per_sec": len(order) / s}), flush=True)
        return
    for epoch in range(a.epochs):
        n, t0 = 0, time.perf_counter()
        model.train()
        for x, y in loader:
            if not a.data_only:
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
            n += len(y)
        s = time.perf_counter() - t0
        print(json.dumps({"epoch": epoch, "images": n, "seconds": s, "images_per_sec": n / s}), flush=True)


if __name__ == "__main__":
    main()
