"""What the benchmark harnesses share: where the Debian build's programs are, and a free
loopback port (the harnesses run as scripts, so this folder is on their import path)."""
import os, socket

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "..", "build", "bin")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
