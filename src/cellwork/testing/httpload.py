"""A small keep-alive HTTP/1.1 client for load, on asyncio streams.

Own code, not a library, because of what the libraries cost here: httpx spent about
2 ms of CPU a request on this kind of machine (more than the gateway it measured), and
aiohttp, a third of that, is imported at load by nats-py wherever it is installed,
adding ~10 MiB to every instance of a test cell. This client speaks just what a load
test of a JSON API needs: GET and POST, ``Content-Length`` bodies, connections kept
alive and reused. It is a test tool, not a general client (no chunked bodies, no TLS,
no redirects).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType
from urllib.parse import urlsplit

import orjson


class HttpError(Exception):
    """The connection failed or the answer could not be read (the cause is chained)."""


class LoadClient:
    """GET and POST to one ``base_url`` over at most ``connections`` kept-alive connections.

    ``request`` returns ``(status, body)``; it raises ``HttpError`` when the connection
    fails and ``TimeoutError`` after ``timeout`` seconds. Use as an async context manager.
    """

    def __init__(self, base_url: str, *, connections: int = 256, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"an http:// URL with a host is needed, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self._host_header = f"Host: {parts.netloc}\r\n".encode()
        self._idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = deque()
        self._slots = asyncio.Semaphore(connections)

    async def __aenter__(self) -> LoadClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return await self.request("GET", path, headers)

    async def post(
        self, path: str, body: object, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """POST ``body`` as JSON."""
        return await self.request("POST", path, headers, orjson.dumps(body))

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, bytes]:
        head = [f"{method} {path} HTTP/1.1\r\n".encode(), self._host_header]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}\r\n".encode())
        if body or method == "POST":
            head.append(b"Content-Type: application/json\r\n")
            head.append(f"Content-Length: {len(body)}\r\n".encode())
        head.append(b"\r\n")
        message = b"".join(head) + body
        async with self._slots, asyncio.timeout(self.timeout):
            connection = self._idle.popleft() if self._idle else await self._open()
            reader, writer = connection
            try:
                writer.write(message)
                status, answer, keep = await self._read(reader)
            except BaseException:
                writer.close()  # a half-read answer leaves the connection unusable
                raise
            if keep:
                self._idle.append(connection)
            else:
                writer.close()
            return status, answer

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length, keep = 0, True
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep = False
            return status, await reader.readexactly(length), keep
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise HttpError(f"the answer could not be read: {exc!r}") from exc
        except (ValueError, IndexError) as exc:
            raise HttpError(f"not an HTTP/1.1 answer: {exc}") from exc

    async def close(self) -> None:
        while self._idle:
            _reader, writer = self._idle.popleft()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
