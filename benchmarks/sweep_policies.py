#!/usr/bin/python3
"""Early termination's saving on the MNIST notebook's search space: the same seed (so the same
trials, in the same order) swept with each policy, against running every trial to the end
(--policy none). Reports epochs trained, wall time and the best validation_acc found.
  benchmarks/sweep_policies.py [--trials 8] [--epochs 8] [--concurrent 2]"""
import argparse, json, os, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "..", "build", "bin")
SPACE = ["batch-size=choice(32,64,128)", "first-layer-neurons=choice(16,64,128,256,512)",
         "second-layer-neurons=choice(16,64,256,512)", "learning-rate=loguniform(-6,-1)"]


def sweep(a, policy_flags, out):
    cmd = [os.path.join(BIN, "ctrain-sweep"), "--program", os.path.join(BIN, "ctrain-mnist"),
           "--output-dir", out, "--metric", "validation_acc", "--max-trials", str(a.trials),
           "--max-concurrent", str(a.concurrent), "--seed", str(a.seed)]
    for p in SPACE:
        cmd += ["--param", p]
    cmd += policy_flags + ["--", "--data-folder", a.data_folder, "--threads", "1", "--no-onnx",
                           "--checkpoint-every", "1", "--keep-checkpoints", "1"]
    if "asha" not in policy_flags:
        cmd += ["--epochs", str(a.epochs)]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    with open(os.path.join(out, "sweep.jsonl")) as f:
        rows = [json.loads(l) for l in f]
    return {"epochs": sum(r["epochs_run"] for r in rows), "wall_s": wall,
            "best": max(r["best_metric"] for r in rows if r["best_metric"] is not None),
            "stopped": sum(r["status"] == "early_terminated" for r in rows),
            "best_trial": max(rows, key=lambda r: r["best_metric"] or -1)["trial"]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-folder", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    policies = {
        "none (every trial to the end)": ["--policy", "none"],
        "bandit slack 0.1, interval 2": ["--policy", "bandit", "--slack-factor", "0.1",
                                         "--evaluation-interval", "2"],
        "median, delay 2": ["--policy", "median", "--delay-evaluation", "2"],
        "truncation 25%, delay 2": ["--policy", "truncation", "--truncation-percentage", "25",
                                    "--delay-evaluation", "2"],
        "asha grace 1, eta 2, max %d" % a.epochs: ["--policy", "asha", "--grace-period", "1",
                                                    "--reduction-factor", "2", "--max-epochs", str(a.epochs)],
    }
    results = {}
    for name, flags in policies.items():
        with tempfile.TemporaryDirectory() as out:
            results[name] = sweep(a, flags, os.path.join(out, "s"))
        r = results[name]
        print(f"{name:34s} epochs {r['epochs']:4d}  wall {r['wall_s']:6.1f}s  stopped {r['stopped']}  "
              f"best validation_acc {r['best']:.4f} (trial {r['best_trial']})", flush=True)
    base = results["none (every trial to the end)"]
    print("\n| policy | epochs trained | vs none | wall s | best validation_acc | best trial |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['epochs']} | {r['epochs'] / base['epochs']:.2f}x | {r['wall_s']:.0f} | "
              f"{r['best']:.4f} | {r['best_trial']} |")
    print(json.dumps({"args": vars(a), "results": results}))


if __name__ == "__main__":
    sys.exit(main())
