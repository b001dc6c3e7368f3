#!/usr/bin/python3
"""ctrain-serve vs a Flask + PyTorch scoring app (benchmarks/serve_peer.py), on localhost, with
wrk as the load generator: requests/s and p50/p99 latency at 1, 8 and 64 concurrent clients for
  - the MNIST DNN, one 784-float input per JSON request;
  - ResNet-18 (2 classes), one 1024x768 JPEG per request (birds eval transform).
Each cell alternates ctrain and the peer, `--repeats` times for `--seconds` each; medians.
The ctrain models are trained by the real trainers for one short epoch, so the files are
what a user serves; the peer's weights are random (speed does not depend on them).
--python picks the peer's Python (the PyTorch 2.11 environment of scripts/install-torch-wheel.sh,
with flask installed in it), --bin-dir the ctrain build (build-torch2-cv/bin: the same LibTorch),
and --peer-compile serves torch.compile(model) on the peer's side."""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile

import numpy as np
from PIL import Image

from bench_common import BIN, HERE, free_port, wait_health
LUA = """
local f = io.open(os.getenv("BODY"), "rb"); local body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.body = body; wrk.headers["Content-Type"] = os.getenv("CTYPE")
"""


def to_ms(text):
    v, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(port, clients, seconds, body, ctype, lua):
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "30s", "--latency",
                          "-s", lua, f"http://127.0.0.1:{port}/score"],
                         capture_output=True, text=True, check=True, env=dict(os.environ, BODY=body, CTYPE=ctype)).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        print(f"  warning: {bad.group(0) if bad else ''} {errors.group(0) if errors else ''}", file=sys.stderr)
    return rps, p50, p99


def start(cmd, port):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_health(port, proc)
    return proc


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def train_models(tmp, bin_dir):
    mnist_out, birds_out = f"{tmp}/mnist", f"{tmp}/birds"
    subprocess.run([f"{bin_dir}/ctrain-mnist", "--data-folder", "/usr/share/datasets/fashion-mnist", "--epochs", "1",
                    "--output-dir", mnist_out, "--no-onnx"], check=True, capture_output=True)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("chicken", "turkey"):
            os.makedirs(f"{tmp}/birds-data/{split}/{cls}", exist_ok=True)
            for i in range(4):
                img = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
                Image.fromarray(img).save(f"{tmp}/birds-data/{split}/{cls}/{i}.jpg")
    subprocess.run([f"{bin_dir}/ctrain-birds", "--data-dir", f"{tmp}/birds-data", "--epochs", "1", "--batch-size", "4",
                    "--output-dir", birds_out, "--no-onnx"], check=True, capture_output=True)
    return f"{mnist_out}/model.pt", f"{birds_out}/model.pt"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--clients", default="1,8,64")
    p.add_argument("--serve-args", default="", help="extra ctrain-serve flags (default: its automatic batching)")
    p.add_argument("--bin-dir", default=BIN, help="the ctrain build whose trainers make the models")
    p.add_argument("--server", default=None, help="the ctrain-serve binary (default: --bin-dir's; e.g. an older build)")
    p.add_argument("--python", default="/usr/bin/python3", help="the peer's Python (needs torch, torchvision, flask)")
    p.add_argument("--peer-compile", action="store_true", help="the peer serves torch.compile(model)")
    a = p.parse_args()
    a.server = a.server or os.path.join(a.bin_dir, "ctrain-serve")
    clients = [int(c) for c in a.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        mnist_model, birds_model = train_models(tmp, a.bin_dir)
        lua = f"{tmp}/post.lua"
        open(lua, "w").write(LUA)
        rng = np.random.default_rng(1)
        json_body = f"{tmp}/mnist.json"
        open(json_body, "w").write(json.dumps({"data": [[round(float(v), 4) for v in rng.random(784)]]}))
        jpeg_body = f"{tmp}/photo.jpg"
        yy, xx = np.mgrid[0:768, 0:1024]
        base = np.stack([(xx * 2) % 256, (yy * 2) % 256, (xx + yy) % 256], -1)
        Image.fromarray(np.clip(base + rng.integers(-25, 25, base.shape), 0, 255).astype(np.uint8)).save(jpeg_body, quality=90)
        rows = []
        for workload, model, peer_model, body, ctype in (
                ("MNIST DNN, JSON", mnist_model, "mnist", json_body, "application/json"),
                ("ResNet-18, JPEG 1024x768", birds_model, "birds", jpeg_body, "image/jpeg")):
            port_c, port_p = free_port(), free_port()
            ctrain = start([a.server, "--model", model, "--port", str(port_c)] + a.serve_args.split(), port_c)
            peer = start([a.python, os.path.join(HERE, "serve_peer.py"), "--model", peer_model,
                          "--port", str(port_p)] + (["--compile"] if a.peer_compile else []), port_p)
            try:
                for c in clients:
                    res = {"ctrain": [], "peer": []}
                    for _ in range(a.repeats):
                        res["ctrain"].append(wrk(port_c, c, a.seconds, body, ctype, lua))
                        res["peer"].append(wrk(port_p, c, a.seconds, body, ctype, lua))
                    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in res.items()}
                    rows.append((workload, c, med["ctrain"], med["peer"]))
                    print(f"{workload:26s} {c:3d} clients: ctrain {med['ctrain'][0]:8.1f} req/s p50 {med['ctrain'][1]:7.2f} ms "
                          f"p99 {med['ctrain'][2]:7.2f} ms | peer {med['peer'][0]:8.1f} req/s p50 {med['peer'][1]:7.2f} ms "
                          f"p99 {med['peer'][2]:7.2f} ms | {med['ctrain'][0] / med['peer'][0]:.2f}x", flush=True)
            finally:
                stop(ctrain)
                stop(peer)
        print("\n| workload | clients | ctrain req/s | p50 ms | p99 ms | Flask+PyTorch req/s | p50 ms | p99 ms | req/s ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for w, c, m, q in rows:
            print(f"| {w} | {c} | {m[0]:.0f} | {m[1]:.2f} | {m[2]:.2f} | {q[0]:.0f} | {q[1]:.2f} | {q[2]:.2f} | {m[0] / q[0]:.2f}x |")


if __name__ == "__main__":
    main()
