#!/usr/bin/env python3
"""ctrain against PyTorch peers on a GPU node: alternating runs, several repeats, one table.

    python3 benchmarks/gpu_bench.py --bin build-node/bin --data-folder $FASHION_MNIST_DIR

Rows: the MNIST DNN (seconds per epoch, batch 64) against PyTorch eager with the data on the
GPU and against the whole step captured as a CUDA graph; ResNet-50 and ResNet-18 (batch 256,
bf16 autocast, channels-last, synthetic data) and ResNet-18 at the tutorial's batch 4 (fp32)
in images/s against PyTorch eager (benchmarks/gpu_peers.py). ctrain's figures are its own
metrics.jsonl (epochs after the first, timed after the epoch's host sync); the peers time
their loops after warm-up. Medians over the repeats. --compile adds torch.compile peers.
ResNet epochs are 100 steps, without checkpoints. Each ctrain run also records where its epochs'
time went (metrics.jsonl "phases": launching steps, the end-of-epoch sync, waiting for data,
the slowest step, evaluation, the checkpoint): a second table, and "phases" in the JSON.

JPEG input (benchmarks/jpeg_peers.py; --no-jpeg leaves it out): a folder of camera-like
1024x768 JPEGs (2,048 train, 256 val; generated in a temporary folder, or --jpeg-dir DIR, made
there once and reused). Row "JPEG input pipeline, batch 256": ctrain-birds --data-only --decode
gpu (8 file-reading threads, 3 epochs, median of the epochs after the first, from its
"data-only epoch" lines) against torchvision's nvJPEG peer (batched decode_jpeg on the GPU, GPU
crop/resize/flip/normalize) and the tutorial's DataLoader with 16 worker processes; ratio =
ctrain's images/s over the peer's. Row "ResNet-18 on JPEG files vs synthetic": ctrain-birds
training resnet18 (batch 256, bf16, channels-last, 2 epochs, --decode gpu) on the folder against
the same on --synthetic-data 2048; ratio = JPEG over synthetic images/s (the input pipeline keeps
the GPU fed when it is near 1).

Scoring row (benchmarks/serve_gpu.py): ctrain-serve --device cuda serving ctrain-birds' ResNet-50
model.pt against the sample's scoring script on the same GPU behind Python's ThreadingHTTPServer,
both answering POST /score with one [1, 3, 224, 224] float32 .npy per request, 32 client
processes with keep-alive connections, 8 s per run, alternating; ratio = ctrain's requests/s
over the peer's (p50/p99 latencies in the log lines).

--dry-run runs every row's commands on the CPU at toy sizes (2 epochs, 64-pixel images,
batch 2, CUDA-graph peers skipped) so scripts/node-check.sh --dry-run, and with it the test
suite, checks that the node run's commands still parse and run; its figures mean nothing and
the JSON says so ("dry_run": true). In the dry run the JPEG folder is a toy one (64 train, 16
val, 128x96), both Python JPEG peers run on the CPU (batch 16, 2 workers, 64-pixel crops), the
ResNet-18 synthetic run too, and the ctrain JPEG runs are skipped (the CPU lane's ctrain-birds
has neither CUDA nor a CPU JPEG decoder); the row says why under "skipped"."""
import argparse, datetime, json, os, statistics, subprocess, sys, tempfile, time

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


def jpeg_peer(args):
    return json_lines(run([sys.executable, os.path.join(HERE, "jpeg_peers.py")] + args))


def data_only_rates(text):
    """images/s of each "data-only epoch N: ... = X images/s (...)" line of ctrain-birds --data-only."""
    rates = []
    for line in text.splitlines():
        if line.startswith("data-only epoch ") and " images/s" in line:
            rates.append(float(line.split(" = ", 1)[1].split(" images/s", 1)[0]))
    return rates


SERVE_ROW = "ResNet-50 scoring, one .npy image per request, 32 clients (requests/s)"
# The rows of two runs each (images/s, requests/s): title -> (the figure the ratios divide, its peers). Their "who" keys
# name the measured runs themselves; in the JSON, "ratio_of" names the numerator.
PAIR_ROWS = {
    "JPEG input pipeline, batch 256": ("jpeg-pipeline ctrain gpu", ["jpeg-pipeline torchvision nvjpeg",
                                                                   "jpeg-pipeline dataloader 16 workers"]),
    "ResNet-18 on JPEG files vs synthetic, batch 256, bf16, channels-last": ("resnet18 jpeg bf16 cl",
                                                                             ["resnet18 synthetic bf16 cl"]),
    SERVE_ROW: ("ctrain-serve", ["python peer"]),
}
JPEG_DRY_SKIP = "dry run: ctrain-birds here has neither CUDA nor a CPU JPEG decoder"


def jpeg_folder(a, tmp, dry):
    """The JPEG folder: --jpeg-dir when it has train/ (reused), else generated there or in tmp."""
    sys.path.insert(0, HERE)
    from jpeg_peers import make_folder
    root = a.jpeg_dir or os.path.join(tmp, "jpegs")
    if os.path.isdir(os.path.join(root, "train")):
        print(f"gpu_bench: JPEG folder {root} (reused)", file=sys.stderr, flush=True)
        return root
    if dry:
        r = make_folder(root, 64, 16, height=96, width=128, workers=2)
    else:
        r = make_folder(root, 2048, 256, height=768, width=1024)
    print(f"gpu_bench: JPEG folder {root}: {r['files']} files, {r['bytes'] / r['files'] / 1024:.0f} KB each, "
          f"made in {r['seconds']:.1f}s", file=sys.stderr, flush=True)
    return root


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="build-node/bin")
    p.add_argument("--data-folder", default=os.environ.get("FASHION_MNIST_DIR"))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also torch.compile peers (minutes of compiling)")
    p.add_argument("--json", help="write the rows here too")
    p.add_argument("--dry-run", action="store_true", help="the same commands on the CPU at toy sizes")
    p.add_argument("--jpeg-dir", help="the JPEG rows' folder: reused when it has train/, else made there")
    p.add_argument("--no-jpeg", action="store_true", help="leave out the JPEG input rows")
    a = p.parse_args()
    if not a.data_folder:
        sys.exit("gpu_bench: --data-folder (or FASHION_MNIST_DIR) is required")
    dry = a.dry_run
    device = "cpu" if dry else "cuda"
    mnist, birds = os.path.join(a.bin, "ctrain-mnist"), os.path.join(a.bin, "ctrain-birds")
    rows, skipped = {}, {}

    def add(name, key, value):
        rows.setdefault(name, {}).setdefault(key, []).append(value)
        print(json.dumps({"row": name, "who": key, "value": value}), flush=True)  # survives a cut-off run

    latencies = {}  # the scoring row: who -> [per run: p50, p99, failed requests]
    phases = {}  # row -> ctrain run -> [per run: its epochs' median "phases" of metrics.jsonl]

    def add_ctrain(name, key, epochs, field):
        """A ctrain figure (the median of its timed epochs), with where those epochs' time went."""
        add(name, key, statistics.median(e[field] for e in epochs))
        if all("phases" in e for e in epochs):
            # Seconds as medians; the slowest step's index as the list of them (a median of
            # indices would name a step that may never have been the slowest).
            ph = {k: statistics.median(e["phases"][k] for e in epochs)
                  for k in epochs[0]["phases"] if k != "slowest_step"}
            ph["slowest_step"] = [e["phases"]["slowest_step"] for e in epochs]
            phases.setdefault(name, {}).setdefault(key, []).append(ph)
            print(json.dumps({"row": name, "who": key, "phases": ph}), flush=True)

    def skip(name, key, why):
        if key not in skipped.setdefault(name, {}):
            skipped[name][key] = why
            print(f"gpu_bench: skipped {key}: {why}", flush=True)

    # (title, ctrain-birds flags, synthetic images per epoch, gpu_peers.py resnet flags)
    resnets = [("ResNet-50, batch 256, bf16, channels-last", ["--arch", "resnet50", "--batch-size", "256",
                "--amp", "bf16"], 256 * 100, ["--arch", "resnet50", "--batch-size", "256", "--amp", "bf16",
                "--channels-last"]),
               ("ResNet-18, batch 256, bf16, channels-last", ["--arch", "resnet18", "--batch-size", "256",
                "--amp", "bf16"], 256 * 100, ["--arch", "resnet18", "--batch-size", "256", "--amp", "bf16",
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
    # The JPEG runs: ctrain-birds --data-only and training (GPU decode), the Python peers.
    jb, jw, jsize = ("16", "2", "64") if dry else ("256", "16", "224")
    jepochs = "2" if dry else "3"  # the first warms up
    with tempfile.TemporaryDirectory() as tmp:
        if dry:
            toy_mnist(a.data_folder, os.path.join(tmp, "mnist"))
            a.data_folder = os.path.join(tmp, "mnist")
        jdir = None if a.no_jpeg else jpeg_folder(a, tmp, dry)
        for rep in range(a.repeats):
            name = "MNIST DNN, batch 64 (s/epoch)"
            m = ctrain_metrics([mnist, "--data-folder", a.data_folder, "--device", device, "--epochs", epochs], tmp)
            add_ctrain(name, "ctrain", m, "seconds")
            m = ctrain_metrics([mnist, "--data-folder", a.data_folder, "--device", device, "--epochs", epochs,
                                "--cuda-graph"], tmp)
            add_ctrain(name, "ctrain-graph", m, "seconds")
            for which in mnist_peers:
                e = peer([which, "--data-folder", a.data_folder, "--epochs", epochs, "--device", device])[1:]
                add(name, which, statistics.median(x["seconds"] for x in e))
            for title, cargs, n, pargs in resnets:
                # No checkpoint inside the timed epochs: the peer writes none (issue 29's stall hunt).
                cargs = cargs + ["--checkpoint-every", "0"]
                m = ctrain_metrics([birds, "--synthetic-data", str(n), "--device", device, "--epochs", epochs] + cargs, tmp)
                add_ctrain(title, "ctrain", m, "samples_per_sec")
                m = ctrain_metrics([birds, "--synthetic-data", str(n), "--device", device, "--epochs", epochs,
                                    "--cuda-graph"] + cargs, tmp)
                add_ctrain(title, "ctrain-graph", m, "samples_per_sec")
                add(title, "eager", statistics.median(x["images_per_sec"] for x in peer(["resnet", "--device", device] + pargs)))
                if a.compile and "batch 256" in title and not dry:
                    add(title, "compile", statistics.median(x["images_per_sec"] for x in peer(["resnet", "--compile"] + pargs)))
            if jdir:
                t_jpeg = time.perf_counter()
                title = "JPEG input pipeline, batch 256"
                if dry:
                    skip(title, "jpeg-pipeline ctrain gpu", JPEG_DRY_SKIP)
                else:
                    # A GPU pipeline that fails (not configured, nvJPEG refusing) costs its rows,
                    # not the rest of the node run: the reason goes into the JSON.
                    cmd = [birds, "--data-dir", jdir, "--data-only", "--decode", "gpu", "--device", device,
                           "--batch-size", "256", "--workers", "8", "--epochs", "3", "--output-dir", os.path.join(tmp, "o")]
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    rates = data_only_rates(r.stdout)[1:]  # the first epoch warms up (nvJPEG, allocator)
                    if r.returncode != 0 or not rates:
                        skip(title, "jpeg-pipeline ctrain gpu",
                             f"exit {r.returncode}: {(r.stdout[-1500:] + r.stderr[-1500:]).strip()}")
                    else:
                        add(title, "jpeg-pipeline ctrain gpu", statistics.median(rates))
                common = ["--root", jdir, "--device", device, "--batch-size", jb, "--image-size", jsize, "--epochs", jepochs]
                add(title, "jpeg-pipeline torchvision nvjpeg", jpeg_peer(["nvjpeg"] + common)[-1]["images_per_sec"])
                add(title, "jpeg-pipeline dataloader 16 workers",
                    jpeg_peer(["dataloader", "--workers", jw] + common)[-1]["images_per_sec"])
                title = "ResNet-18 on JPEG files vs synthetic, batch 256, bf16, channels-last"
                train = ["--device", device, "--arch", "resnet18", "--batch-size", jb, "--image-size", jsize,
                         "--amp", "bf16", "--channels-last", "--epochs", "2", "--checkpoint-every", "0"]
                if dry:
                    skip(title, "resnet18 jpeg bf16 cl", JPEG_DRY_SKIP)
                elif "jpeg-pipeline ctrain gpu" in skipped.get("JPEG input pipeline, batch 256", {}):
                    skip(title, "resnet18 jpeg bf16 cl", "the GPU pipeline failed (see the row above)")
                else:
                    m = ctrain_metrics([birds, "--data-dir", jdir, "--decode", "gpu", "--workers", "8"] + train, tmp)
                    add_ctrain(title, "resnet18 jpeg bf16 cl", m, "samples_per_sec")
                m = ctrain_metrics([birds, "--synthetic-data", "32" if dry else "2048"] + train, tmp)
                add_ctrain(title, "resnet18 synthetic bf16 cl", m, "samples_per_sec")
                print(f"JPEG rows: {time.perf_counter() - t_jpeg:.0f}s", file=sys.stderr, flush=True)
            print(f"repeat {rep + 1}/{a.repeats} done", file=sys.stderr, flush=True)
        serve_bin = os.path.join(a.bin, "ctrain-serve")
        if not os.path.exists(serve_bin):
            skip(SERVE_ROW, "ctrain-serve", f"no {serve_bin} (this build has no Boost.Beast/OpenSSL: scripts/node-kit.sh --serving)")
        else:
            # The model a user would serve: ctrain-birds' own model.pt (its weights do not matter
            # for speed), ResNet-50 at 224 (a toy ResNet-18 at 64 in the dry run).
            t_serve = time.perf_counter()
            arch, size = ("resnet18", 64) if dry else ("resnet50", 224)
            model_dir = os.path.join(tmp, "serve-model")
            run([birds, "--synthetic-data", "8", "--batch-size", "4", "--arch", arch, "--image-size", str(size),
                 "--device", device, "--epochs", "1", "--no-onnx", "--output-dir", model_dir])
            sys.path.insert(0, HERE)
            from serve_gpu import run_row
            try:
                res = run_row(serve_bin, os.path.join(model_dir, "model.pt"), arch, size, device,
                              clients=2 if dry else 32, seconds=1 if dry else 8, repeats=a.repeats)
            except Exception as e:  # the row is lost, not the run's other rows
                skip(SERVE_ROW, "ctrain-serve", f"the scoring row failed: {e!r}")
                res = {"ctrain": [], "peer": []}
            for who, key in (("ctrain", "ctrain-serve"), ("peer", "python peer")):
                for rps, p50, p99, failed in res[who]:
                    add(SERVE_ROW, key, rps)
                    latencies.setdefault(SERVE_ROW, {}).setdefault(key, []).append(
                        {"p50": p50, "p99": p99, "failed_requests": failed})
                    print(json.dumps({"row": SERVE_ROW, "who": key, "p50_ms": p50, "p99_ms": p99, "failed": failed}),
                          flush=True)
            print(f"scoring row: {time.perf_counter() - t_serve:.0f}s", file=sys.stderr, flush=True)
    probe = ("import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu (dry run)');"
             "print(torch.__version__)")
    dev, torch_version = run([sys.executable, "-c", probe]).strip().splitlines()
    print(f"\n{dev}, PyTorch {torch_version}; medians of {a.repeats} alternating repeats" +
          (" (DRY RUN on the CPU at toy sizes: these figures mean nothing)" if dry else "") + "\n")
    print("| workload | ctrain | ctrain --cuda-graph | PyTorch eager | ratio | PyTorch CUDA graph / compile | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for name, r in rows.items():
        if name in PAIR_ROWS:
            continue
        med = {k: statistics.median(v) for k, v in r.items()}
        summary[name] = {"median": med, "all": r, "unit": "s/epoch" if name.startswith("MNIST") else "images/s"}
        # ratio: ctrain's time over the peer's for MNIST (lower is better), ctrain's images/s
        # over the peer's for ResNet (higher is better)
        summary[name]["ratio"] = {k: med["ctrain"] / v for k, v in med.items() if k != "ctrain"}
        # ctrain's better figure of the two (eager, captured) is the one compared, in the table
        # and in "ratio_best" (what the bars are judged on)
        best = min if name.startswith("MNIST") else max
        cb = best(med["ctrain"], med.get("ctrain-graph", med["ctrain"]))
        summary[name]["ratio_best"] = {k: cb / v for k, v in med.items() if k not in ("ctrain", "ctrain-graph")}
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
    jpeg_lines = []
    for name in PAIR_ROWS:
        if name not in rows and name not in skipped:
            continue
        r = rows.get(name, {})
        ref, peers = PAIR_ROWS[name]
        med = {k: statistics.median(v) for k, v in r.items()}
        summary[name] = {"median": med, "all": r, "unit": "requests/s" if name == SERVE_ROW else "images/s",
                         "ratio": {k: med[ref] / med[k] for k in peers if ref in med and med.get(k)},
                         "ratio_of": ref}
        if name in skipped:
            summary[name]["skipped"] = skipped[name]
        c = f"{med[ref]:.0f}" if ref in med else "skipped"
        for k in peers:
            v = f"{med[k]:.0f}" if k in med else "skipped"
            ratio = f"{summary[name]['ratio'][k]:.2f}x" if k in summary[name]["ratio"] else ""
            unit = "" if name == SERVE_ROW else " (images/s)"
            jpeg_lines.append(f"| {name}{unit} | {ref}: {c} | {k}: {v} | {ratio} |")
        if name in latencies:
            summary[name]["latency_ms"] = latencies[name]
    if jpeg_lines:
        print("\n| workload | ctrain | peer | ratio |")
        print("| --- | --- | --- | --- |")
        print("\n".join(jpeg_lines))
    # Where ctrain's epochs went (host seconds per timed epoch, medians; metrics.jsonl "phases"):
    # step = launching the steps, sync = waiting for the device at the epoch's end, progress =
    # the progress line's loss reads (each waits for the device), data = waiting for batches,
    # and the slowest single step (a re-tune or a sync shows there) with the steps that were.
    if phases:
        print("\n| workload | run | step s | sync s | progress s | data s | slowest step (s) | eval s | checkpoint s |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, runs in phases.items():
            for key, per_run in runs.items():
                med = {k: statistics.median(p.get(k, 0.0) for p in per_run)
                       for k in per_run[0] if k != "slowest_step"}
                med["slowest_step"] = sorted({i for p in per_run for i in p["slowest_step"]})
                summary.setdefault(name, {}).setdefault("phases", {})[key] = {"median": med, "all": per_run}
                where = ",".join(f"#{i}" for i in med["slowest_step"])
                print(f"| {name} | {key} | {med['step_s']:.3f} | {med['sync_s']:.3f} | "
                      f"{med.get('progress_s', 0.0):.3f} | {med['data_s']:.3f} | "
                      f"{where}: {med['slowest_step_s']:.3f} | {med['eval_s']:.3f} | {med['checkpoint_s']:.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": dev, "pytorch": torch_version, "dry_run": dry,
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "repeats": a.repeats, "rows": summary}, f, indent=1)


if __name__ == "__main__":
    main()
