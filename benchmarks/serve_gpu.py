#!/usr/bin/env python3
"""Scoring on a GPU node: ctrain-serve --device cuda against a PyTorch scoring app on the same
GPU, both answering POST /score with a NumPy .npy body ([1, 3, S, S] float32, one image per
request, as a client that preprocesses on its side sends it), under N concurrent clients.

The node has neither wrk nor Flask nor a C++ image decoder, so everything here is the standard
library: the peer is the sample's scoring script (init() loads the model once, run() scores
one request under no_grad and answers label and probability of a softmax) behind
http.server's ThreadingHTTPServer, and the load comes from N client processes, each with one
keep-alive connection posting the same body back to back for --seconds. ctrain-serve batches
concurrent requests into one forward (its dynamic batcher); the peer runs one forward per
request, as the sample does.

    python3 benchmarks/serve_gpu.py peer --arch resnet50 --port 8081 --device cuda
    python3 benchmarks/serve_gpu.py load --port 8080 --body x.npy --clients 32 --seconds 10

benchmarks/gpu_bench.py runs both through run_row() for its scoring row."""
import argparse, http.client, io, json, multiprocessing, os, signal, statistics, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench_common import free_port, wait_health


def peer(a):
    import numpy as np
    import torch
    import torchvision
    dev = torch.device(a.device)
    model = getattr(torchvision.models, a.arch)(num_classes=2).to(dev).eval()
    classes = ["chicken", "turkey"]

    def run(x):
        with torch.no_grad():
            out = model(x.to(dev))
            probs = torch.softmax(out, 1).cpu().numpy()
            index = out.argmax(1).cpu().numpy()
        return [{"label": classes[i], "probability": float(probs[k][i])} for k, i in enumerate(index)]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the clients use it

        def log_message(self, *args):
            pass

        def answer(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.answer(200, {"status": "ok"}) if self.path == "/health" else self.answer(404, {"error": "no route"})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                x = torch.from_numpy(np.load(io.BytesIO(body), allow_pickle=False))
                if x.dim() == 3:
                    x = x.unsqueeze(0)
                self.answer(200, {"predictions": run(x.float())})
            except Exception as e:  # a bad body is the client's fault, as in the sample
                self.answer(400, {"error": str(e)})

    run(torch.zeros(1, 3, a.image_size, a.image_size))  # warm-up: cuDNN, the allocator
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    def stop(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def _client(args):
    port, body, ctype, seconds, start = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()  # before the clock starts: no request's latency holds the connect
    lat, errors = [], 0
    while time.time() < start:
        time.sleep(0.001)
    end = start + seconds
    while time.time() < end:
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/score", body=body, headers={"Content-Type": ctype})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                errors += 1
                continue
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        if time.time() <= end:  # a request that ends after the window is not the window's
            lat.append(time.perf_counter() - t0)
    return lat, errors


def load(port, body, ctype, clients, seconds):
    """(requests/s, p50 ms, p99 ms, failed requests) of `clients` keep-alive connections."""
    start = time.time() + 1.0  # every client forked, connected and waiting before the clock starts
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        results = pool.map(_client, [(port, body, ctype, seconds, start)] * clients)
    lat = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    if not lat:
        return 0.0, float("nan"), float("nan"), errors
    return (len(lat) / seconds, 1e3 * statistics.median(lat), 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            errors)


def npy_body(image_size, seed=0):
    import numpy as np
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).standard_normal((1, 3, image_size, image_size), dtype=np.float32))
    return buf.getvalue()


def run_row(serve_bin, model, arch, image_size, device, clients, seconds, repeats, python=sys.executable):
    """Alternating runs of ctrain-serve and the peer: {"ctrain": [(rps, p50, p99, errors)...], "peer": [...]}."""
    body = npy_body(image_size)
    port_c, port_p = free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen([serve_bin, "--model", model, "--device", device, "--port", str(port_c)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_health(port_c, procs[-1])
        procs.append(subprocess.Popen([python, os.path.abspath(__file__), "peer", "--arch", arch, "--port", str(port_p),
                                       "--device", device, "--image-size", str(image_size)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_health(port_p, procs[-1])
        for port in (port_c, port_p):  # warm-up: cuDNN's choices for each batch size, the allocator
            load(port, body, "application/x-npy", clients, 1)
        res = {"ctrain": [], "peer": []}
        for _ in range(repeats):
            res["ctrain"].append(load(port_c, body, "application/x-npy", clients, seconds))
            res["peer"].append(load(port_p, body, "application/x-npy", clients, seconds))
        return res
    finally:
        for p in procs:  # each in its own session: the group goes, whatever it started
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass  # already gone (wait_health reaped a server that exited)
                try:
                    p.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    continue


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("peer")
    pp.add_argument("--arch", default="resnet50")
    pp.add_argument("--port", type=int, required=True)
    pp.add_argument("--device", default="cuda")
    pp.add_argument("--image-size", type=int, default=224)
    pl = sub.add_parser("load")
    pl.add_argument("--port", type=int, required=True)
    pl.add_argument("--body", required=True, help="a .npy file")
    pl.add_argument("--clients", type=int, default=32)
    pl.add_argument("--seconds", type=float, default=10)
    a = p.parse_args()
    if a.cmd == "peer":
        peer(a)
    else:
        with open(a.body, "rb") as f:
            body = f.read()
        rps, p50, p99, errors = load(a.port, body, "application/x-npy", a.clients, a.seconds)
        print(json.dumps({"requests_per_sec": rps, "p50_ms": p50, "p99_ms": p99, "failed": errors}))


if __name__ == "__main__":
    main()
