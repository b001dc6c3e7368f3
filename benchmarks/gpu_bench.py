#!/usr/bin/env python3
"""ctrain against PyTorch peers on a GPU node: alternating runs, several repeats, one table.

    python3 benchmarks/gpu_bench.py --bin build-node/bin --data-folder $FASHION_MNIST_DIR

Rows: the MNIST DNN (seconds per epoch, batch 64) against PyTorch eager with the data on the
GPU and against the whole step captured as a CUDA graph; ResNet-50 and ResNet-18 (batch 256,
bf16 autocast, channels-last, synthetic data) and ResNet-18 at the tutorial's batch 4 (fp32)
in images/s against PyTorch eager (benchmarks/gpu_peers.py). ctrain's figures are its own
metrics.jsonl (epochs after the first, timed after the epoch's host sync); the peers time
their loops after warm-up. Medians over the repeats. --compile adds torch.compile peers."""
import argparse, json, os, statistics, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"gpu_bench: {' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def json_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def ctrain_metrics(args, tmp):
    out = os.path.join(tmp, "o")
    subprocess.run(["rm", "-rf", out])
    run(args + ["--no-onnx", "--output-dir", out])
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()][1:]  # the first epoch warms up (cuDNN, allocator)


def peer(args):
    return json_lines(run([sys.executable, os.path.join(HERE, "gpu_peers.py")] + args))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="build-node/bin")
    p.add_argument("--data-folder", default=os.environ.get("FASHION_MNIST_DIR"))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also torch.compile peers (minutes of compiling)")
    p.add_argument("--json", help="write the rows here too")
    a = p.parse_args()
    mnist, birds = os.path.join(a.bin, "ctrain-mnist"), os.path.join(a.bin, "ctrain-birds")
    rows = {}

    def add(name, key, value):
        rows.setdefault(name, {}).setdefault(key, []).append(value)
        print(json.dumps({"row": name, "who": key, "value": value}), flush=True)  # survives a cut-off run

    resnets = [("ResNet-50, batch 256, bf16, channels-last", ["--arch", "resnet50", "--batch-size", "256",
                "--amp", "bf16"], 256 * 12, ["--arch", "resnet50", "--batch-size", "256", "--amp", "bf16",
                "--channels-last"]),
               ("ResNet-18, batch 256, bf16, channels-last", ["--arch", "resnet18", "--batch-size", "256",
                "--amp", "bf16"], 256 * 30, ["--arch", "resnet18", "--batch-size", "256", "--amp", "bf16",
                "--channels-last"]),
               ("ResNet-18, batch 4, fp32", ["--arch", "resnet18", "--batch-size", "4"], 4 * 300,
                ["--arch", "resnet18", "--batch-size", "4", "--steps", "300"])]
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats):
            name = "MNIST DNN, batch 64 (s/epoch)"
            m = ctrain_metrics([mnist, "--data-folder", a.data_folder, "--device", "cuda", "--epochs", "3"], tmp)
            add(name, "ctrain", statistics.median(e["seconds"] for e in m))
            for which in ("mnist-eager", "mnist-graph"):
                e = peer([which, "--data-folder", a.data_folder, "--epochs", "3"])[1:]
                add(name, which, statistics.median(x["seconds"] for x in e))
            for title, cargs, n, pargs in resnets:
                m = ctrain_metrics([birds, "--synthetic-data", str(n), "--device", "cuda", "--epochs", "3"] + cargs, tmp)
                add(title, "ctrain", statistics.median(e["samples_per_sec"] for e in m))
                add(title, "eager", statistics.median(x["images_per_sec"] for x in peer(["resnet"] + pargs)))
                if a.compile and "batch 256" in title:
                    add(title, "compile", statistics.median(x["images_per_sec"] for x in peer(["resnet", "--compile"] + pargs)))
            print(f"repeat {rep + 1}/{a.repeats} done", file=sys.stderr, flush=True)
    dev = run([sys.executable, "-c", "import torch; print(torch.cuda.get_device_name(), torch.__version__)"]).strip()
    print(f"\n{dev}; medians of {a.repeats} alternating repeats\n")
    print("| workload | ctrain | PyTorch eager | ratio | PyTorch CUDA graph / compile | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    summary = {}
    for name, r in rows.items():
        med = {k: statistics.median(v) for k, v in r.items()}
        summary[name] = {"median": med, "all": r}
        if name.startswith("MNIST"):
            c, e, g = med["ctrain"], med["mnist-eager"], med["mnist-graph"]
            print(f"| {name} | {c:.3f} | {e:.3f} | {c / e:.2f}x time | {g:.3f} | {c / g:.2f}x time |")
        else:
            c, e = med["ctrain"], med["eager"]
            comp = med.get("compile")
            extra = f"| {comp:.0f} | {c / comp:.2f}x |" if comp else "| not run | |"
            print(f"| {name} (images/s) | {c:.0f} | {e:.0f} | {c / e:.2f}x {extra}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": dev, "rows": summary}, f, indent=1)


if __name__ == "__main__":
    main()
