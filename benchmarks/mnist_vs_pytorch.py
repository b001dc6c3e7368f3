#!/usr/bin/python3
"""Epoch time of ctrain-mnist vs the PyTorch Python peer (benchmarks/mnist_peer.py) on the same
data, model, batch and thread count, run alternately so both see the same machine state.
Prints a table and a JSON summary; the ratio is ctrain / PyTorch (lower is better)."""
import argparse, json, os, statistics, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run_ctrain(binary, a, out):
    subprocess.run([binary, "--data-folder", a.data_folder, "--epochs", str(a.epochs),
                    "--threads", str(a.threads), "--output-dir", out, "--checkpoint-every", "0"],
                   check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


def run_peer(a):
    r = subprocess.run([a.python, os.path.join(HERE, "mnist_peer.py"),
                        "--data-folder", a.data_folder, "--epochs", str(a.epochs),
                        "--threads", str(a.threads)] + (["--compile"] if a.compile else []),
                       check=True, capture_output=True, text=True)
    return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-folder", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--binary", default=os.path.join(HERE, "..", "build", "bin", "ctrain-mnist"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--python", default="/usr/bin/python3",
                   help="the peer's Python: Debian's (PyTorch 1.13), or the wheel's environment "
                        "(scripts/install-torch-wheel.sh --python: PyTorch 2.11)")
    p.add_argument("--compile", action="store_true", help="the peer trains torch.compile(model) (PyTorch 2.x)")
    a = p.parse_args()
    c_times, p_times, c_acc, p_acc = [], [], [], []
    for r in range(a.repeats):
        with tempfile.TemporaryDirectory() as out:
            cm = run_ctrain(a.binary, a, out)
        pm = run_peer(a)
        # Skip epoch 0 of each run (warm-up: allocator, page faults) when there are more.
        skip = 1 if a.epochs > 1 else 0
        c_times += [m["seconds"] for m in cm[skip:]]
        p_times += [m["seconds"] for m in pm[skip:]]
        c_acc.append(cm[-1]["validation_acc"])
        p_acc.append(pm[-1]["validation_acc"])
        print(f"repeat {r}: ctrain {statistics.median(m['seconds'] for m in cm[skip:]):.3f} s/epoch, "
              f"pytorch {statistics.median(m['seconds'] for m in pm[skip:]):.3f} s/epoch", flush=True)
    c, py = statistics.median(c_times), statistics.median(p_times)
    print(f"\n| impl    | median s/epoch | final val acc |\n|---------|----------------|---------------|")
    print(f"| ctrain  | {c:.3f}          | {statistics.median(c_acc):.4f}        |")
    print(f"| pytorch | {py:.3f}          | {statistics.median(p_acc):.4f}        |")
    print(f"ratio ctrain/pytorch = {c / py:.3f}")
    print(json.dumps({"benchmark": "mnist_epoch_time", "threads": a.threads, "epochs": a.epochs, "peer_python": a.python, "peer_compile": a.compile,
                      "repeats": a.repeats, "ctrain_s_per_epoch": c, "pytorch_s_per_epoch": py,
                      "ratio": c / py}))


if __name__ == "__main__":
    sys.exit(main())
