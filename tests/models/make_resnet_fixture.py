#!/usr/bin/python3
"""Writes a torchvision ResNet's weights and one batch of inputs and logits as .safetensors
files, for ctrain's parity test. Usage: make_resnet_fixture.py ARCH NUM_CLASSES OUT_DIR.
The safetensors layout (8-byte little-endian header size, JSON header, raw little-endian
data) is written directly: Debian ships no python3-safetensors."""
import json, struct, sys

import torch
import torchvision

DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def save(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    arch, classes, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=classes)
    # Non-trivial BatchNorm statistics, so eval-mode normalisation is really compared.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        logits = model(x)
    save(f"{out}/weights.safetensors", model.state_dict())
    save(f"{out}/batch.safetensors", {"input": x, "logits": logits})


if __name__ == "__main__":
    main()
