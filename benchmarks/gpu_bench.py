#!/usr/bin/env python3
"""ctrain against PyTorch peers on a GPU node: alternating runs, several repeats, one table.

    python3 benchmarks/gpu_bench.py --bin build-node/bin --data-folder $FASHION_MNIST_DIR

Rows: the MNIST DNN (seconds per epoch, batch 64) against PyTorch eager with the data on the
GPU and against the whole step captured as a CUDA graph; ResNet-50 and ResNet-18 (batch 256,
bf16 autocast, channels-last, synthetic data) and ResNet-18 at the tutorial's batch 4 (fp32)
in images/s against PyTorch eager (benchmarks/gpu_peers.py). ctrain's figures are its own
metrics.jsonl (epochs after the first, timed after the epoch's host sync); the peers time
their loops after warm-up. Medians over the repeats. --compile adds torch.compile peers.

--dry-run runs every row's commands on the CPU at toy sizes (2 epochs, 64-pixel images,
batch 2, CUDA-graph peers skipped) so scripts/node-check.sh --dry-run, and with it the test
suite, checks that the node run's commands still parse and run; its figures mean nothing and
the JSON says so ("dry_run": true)."""
import argparse, datetime, json, os, statistics, subprocess, sys, tempfile

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


def toy_mnist(src, dst, counts={"train": 1024, "t10k": 256}):
    """The first few records of each IDX file of src, as IDX files in dst (the dry run's data)."""
    import gzip
    os.makedirs(dst, exist_ok=True)
    for prefix, n in counts.items():
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            stem = os.path.join(src, f"{prefix}-{kind}")
            path = stem if os.path.exists(stem) else stem + ".gz"
            with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
                data = f.read()
            ndim = data[3]
            dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
            record = 1
            for d in dims[1:]:
                record *= d
            head = data[:4] + n.to_bytes(4, "big") + data[8:4 + 4 * ndim]
            with open(os.path.join(dst, f"{prefix}-{kind}"), "wb") as f:
                f.write(head + data[4 + 4 * ndim: 4 + 4 * ndim + n * record])


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
    p.add_argument("--dry-run", action="store_true", help="the same commands on the CPU at toy sizes")
    a = p.parse_args()
    if not a.data_folder:
        sys.exit("gpu_bench: --data-folder (or FASHION_MNIST_DIR) is required")
    dry = a.dry_run
    device = "cpu" if dry else "cuda"
    mnist, birds = os.path.join(a.bin, "ctrain-mnist"), os.path.join(a.bin, "ctrain-birds")
    rows = {}

    def add(name, key, value):
        rows.setdefault(name, {}).setdefault(key, []).append(value)
        print(json.dumps({"row": name, "who": key, "value": value}), flush=True)  # survives a cut-off run

    # (title, ctrain-birds flags, synthetic images per epoch, gpu_peers.py resnet flags)
    resnets = [("ResNet-50, batch 256, bf16, channels-last", ["--arch", "resnet50", "--batch-size", "256",
                "--amp", "bf16"], 256 * 12, ["--arch", "resnet50", "--batch-size", "256", "--amp", "bf16",
                "--channels-last"]),
               ("ResNet-18, batch 256, bf16, channels-last", ["--arch", "resnet18", "--batch-size", "256",
                "--amp", "bf16"], 256 * 30, ["--arch", "resnet18", "--batch-size", "256", "--amp", "bf16",
                "--channels-last"]),
               ("ResNet-18, batch 4, fp32", ["--arch", "resnet18", "--batch-size", "4"], 4 * 300,
                ["--arch", "resnet18", "--batch-size", "4", "--steps", "300"])]
    if dry:  # toy sizes: batch 2 of 64-pixel images, 8 per epoch, one timed run of 2 steps
        def toy(args):
            return ["2" if i and args[i - 1] in ("--batch-size", "--steps") else v for i, v in enumerate(args)]
        resnets = [(t, toy(c) + ["--image-size", "64"], 8,
                    toy(pa) + ["--image-size", "64", "--warmup", "1", "--runs", "1"] + ([] if "--steps" in pa else ["--steps", "2"]))
                   for t, c, _, pa in resnets]
    epochs = "2" if dry else "3"
    mnist_peers = ("mnist-eager",) if dry else ("mnist-eager", "mnist-graph")  # graphs: CUDA only
    with tempfile.TemporaryDirectory() as tmp:
        if dry:
            toy_mnist(a.data_folder, os.path.join(tmp, "mnist"))
            a.data_folder = os.path.join(tmp, "mnist")
        for rep in range(a.repeats):
            name = "MNIST DNN, batch 64 (s/epoch)"
            m = ctrain_metrics([mnist, "--data-folder", a.data_folder, "--device", device, "--epochs", epochs], tmp)
            add(name, "ctrain", statistics.median(e["seconds"] for e in m))
            m = ctrain_metrics([mnist, "--data-folder", a.data_folder, "--device", device, "--epochs", epochs,
                                "--cuda-graph"], tmp)
            add(name, "ctrain-graph", statistics.median(e["seconds"] for e in m))
            for which in mnist_peers:
                e = peer([which, "--data-folder", a.data_folder, "--epochs", epochs, "--device", device])[1:]
                add(name, which, statistics.median(x["seconds"] for x in e))
            for title, cargs, n, pargs in resnets:
                m = ctrain_metrics([birds, "--synthetic-data", str(n), "--device", device, "--epochs", epochs] + cargs, tmp)
                add(title, "ctrain", statistics.median(e["samples_per_sec"] for e in m))
                m = ctrain_metrics([birds, "--synthetic-data", str(n), "--device", device, "--epochs", epochs,
                                    "--cuda-graph"] + cargs, tmp)
                add(title, "ctrain-graph", statistics.median(e["samples_per_sec"] for e in m))
                add(title, "eager", statistics.median(x["images_per_sec"] for x in peer(["resnet", "--device", device] + pargs)))
                if a.compile and "batch 256" in title and not dry:
                    add(title, "compile", statistics.median(x["images_per_sec"] for x in peer(["resnet", "--compile"] + pargs)))
            print(f"repeat {rep + 1}/{a.repeats} done", file=sys.stderr, flush=True)
    probe = ("import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu (dry run)');"
             "print(torch.__version__)")
    dev, torch_version = run([sys.executable, "-c", probe]).strip().splitlines()
    print(f"\n{dev}, PyTorch {torch_version}; medians of {a.repeats} alternating repeats" +
          (" (DRY RUN on the CPU at toy sizes: these figures mean nothing)" if dry else "") + "\n")
    print("| workload | ctrain | ctrain --cuda-graph | PyTorch eager | ratio | PyTorch CUDA graph / compile | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for name, r in rows.items():
        med = {k: statistics.median(v) for k, v in r.items()}
        summary[name] = {"median": med, "all": r}
        # ratio: ctrain's time over the peer's for MNIST (lower is better), ctrain's images/s
        # over the peer's for ResNet (higher is better)
        summary[name]["ratio"] = {k: med["ctrain"] / v for k, v in med.items() if k != "ctrain"}
        # ctrain's better figure of the two (eager, captured) is the one compared
        if name.startswith("MNIST"):
            c0, cg, e, g = med["ctrain"], med["ctrain-graph"], med["mnist-eager"], med.get("mnist-graph")
            c = min(c0, cg)
            extra = f"| {g:.3f} | {c / g:.2f}x time |" if g else "| not run | |"
            print(f"| {name} | {c0:.3f} | {cg:.3f} | {e:.3f} | {c / e:.2f}x time {extra}")
        else:
            c0, cg, e = med["ctrain"], med["ctrain-graph"], med["eager"]
            c = max(c0, cg)
            comp = med.get("compile")
            extra = f"| {comp:.0f} | {c / comp:.2f}x |" if comp else "| not run | |"
            print(f"| {name} (images/s) | {c0:.0f} | {cg:.0f} | {e:.0f} | {c / e:.2f}x {extra}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": dev, "pytorch": torch_version, "dry_run": dry,
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "repeats": a.repeats, "rows": summary}, f, indent=1)


if __name__ == "__main__":
    main()
