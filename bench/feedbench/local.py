"""Where the bench runs: the repository, the loopback host, the read under test, free ports."""

from __future__ import annotations

import socket
from pathlib import Path

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
FEED_PATH = "/v1/feed?limit=20"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
