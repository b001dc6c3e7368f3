#!/usr/bin/python3
"""ctrain-serve under the hostile loads of issue 26, measured (not asserted): for each load, the
slowest of a few GET /health probes made while the load is on, the server's peak RSS (VmHWM)
and, for the last load, how long SIGTERM takes to end the process.
  idle:     300 connections that never send a byte
  trickle:  130 connections sending one header line every 2 s
  headers:  4 clients each sending 1M header lines without credentials (--api-key-file set)
  nested:   4 clients each sending 16 MB of '[' as a JSON body
  flat:     4 clients each sending a 16 MB JSON array of numbers (the largest legal body)
  chunked:  4 clients each sending 64 MB chunked under --max-body-mb 16
Usage: benchmarks/serve_hostile.py [--model outputs/model.pt] [--server PATH]
  (default model: one MNIST epoch trained here; default server: build/bin/ctrain-serve)
"""
import argparse, os, signal, socket, subprocess, sys, tempfile, threading, time

from bench_common import BIN, HERE, free_port


def health_seconds(port, timeout=30.0):
    """Seconds until GET /health answered 200; `timeout` when it did not answer in time."""
    t = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if not s.recv(64).startswith(b"HTTP/1.1 200"):
                return timeout
    except socket.timeout:
        return timeout
    return time.perf_counter() - t


def hwm_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def sender(port, chunks, results):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            for c in chunks:
                s.sendall(c)
            s.settimeout(30)
            results.append(s.recv(64)[:12].decode(errors="replace"))
    except OSError as e:
        results.append(type(e).__name__)


def run_load(port, name, stop):
    socks, threads, results = [], [], []
    if name == "idle":
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
    elif name == "trickle":
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(130)]
        for s in socks:
            s.sendall(b"POST /score HTTP/1.1\r\n")

        def trickle():
            while not stop.is_set():
                for s in socks:
                    try:
                        s.sendall(b"X-Slow: 1\r\n")
                    except OSError:
                        pass
                stop.wait(2)
        threads.append(threading.Thread(target=trickle))
    else:
        if name == "headers":
            flood = b"X-A: b\r\n" * 1_000_000
            chunks = [b"GET /metadata HTTP/1.1\r\nHost: x\r\n", flood, b"\r\n"]
        elif name == "nested":
            body = b"[" * (16 << 20)
            chunks = [b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body), body]
        elif name == "flat":
            n = (16 << 20) // 2 - 16
            body = b'{"data": [' + b"1," * (n - 1) + b"1]}"
            body = body[: 16 << 20]
            chunks = [b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body), body]
        else:  # chunked
            piece = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"
            chunks = [b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n"] + [piece] * 64 + [b"0\r\n\r\n"]
        for _ in range(4):
            threads.append(threading.Thread(target=sender, args=(port, chunks, results)))
    for t in threads:
        t.start()
    return socks, threads, results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--timeout-s", type=int, default=10)
    ap.add_argument("--server", default=f"{BIN}/ctrain-serve")
    ap.add_argument("--probe-timeout", type=float, default=30.0)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="serve-hostile-")
    model = args.model
    if not model:
        subprocess.run([f"{BIN}/ctrain-mnist", "--data-folder", "/usr/share/datasets/fashion-mnist", "--epochs", "1",
                        "--output-dir", f"{tmp}/run"], check=True, stdout=subprocess.DEVNULL)
        model = f"{tmp}/run/model.pt"
    key = f"{tmp}/key"
    with open(key, "w") as f:
        f.write("s3cret\n")
    print(f"| load | slowest /health probe | server peak RSS | answers to the load |")
    print(f"| --- | --- | --- | --- |")
    for name in ["idle", "trickle", "headers", "nested", "flat", "chunked"]:
        port = free_port()
        cmd = [args.server, "--model", model, "--port", str(port), "--timeout-s", str(args.timeout_s)]
        if name == "headers":
            cmd += ["--api-key-file", key]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            end = time.time() + 60
            while True:
                try:
                    if health_seconds(port, 1) < 1:
                        break
                except OSError:
                    pass
                if time.time() > end or proc.poll() is not None:
                    raise RuntimeError(f"{args.server} did not start")
                time.sleep(0.2)
            stop = threading.Event()
            socks, threads, results = run_load(port, name, stop)
            probes = []
            for _ in range(6):
                time.sleep(0.5)
                probes.append(health_seconds(port, args.probe_timeout))
            stop.set()
            for t in threads:
                t.join()
            rss = hwm_mb(proc.pid)
            sigterm = ""
            if name == "trickle":  # the trickling clients are still connected
                t = time.perf_counter()
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    pass
                sigterm = f"; SIGTERM ended it in {time.perf_counter() - t:.2f} s (--timeout-s {args.timeout_s})"
            for s in socks:
                s.close()
            answers = ", ".join(sorted(set(results))) if results else "-"
            slowest = max(probes)
            probe = f"no answer in {slowest:.0f} s" if slowest >= args.probe_timeout else f"{slowest * 1000:.1f} ms"
            if proc.poll() is not None and name != "trickle":
                answers += f"; the server exited with {proc.returncode}"
            print(f"| {name} | {probe} | {rss:.0f} MB | {answers}{sigterm} |")
            sys.stdout.flush()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
