"""``cellwork stream``: print the frames a push socket sends, one JSON object a line.

A push socket (``/v1/stream``) speaks JSON frames: the client may send
``{"type":"subscribe","topics":[...]}`` (answered ``subscribed``) and
``{"type":"ping"}`` (answered ``pong``); the server pushes what happens, such
as ``{"type":"feed.ready","version":1}``. This reader:

- reads nothing from the terminal, so ``cellwork stream ... &`` keeps running
  in the background of an interactive shell (a client that reads its stdin is
  stopped there at once, by SIGTTIN);
- subscribes by itself, then prints every frame but the ``pong`` answers to its
  own keep-alive pings, flushing each line (its output is often a file or a pipe);
- sends ``{"type":"ping"}`` every ``ping_interval`` seconds: a push service closes
  a socket that says nothing for its idle timeout, and WebSocket protocol pings
  never reach the application to count as saying something;
- counts what the server pushes on its own, every frame but ``ping``, ``pong``
  and ``subscribed`` (acknowledgements), toward ``count``.

Failures are ``StreamError``s whose text is one line for a person to read: a
refused handshake (HTTP 403: a bad token), an unreachable server, a socket the
server closed before the reader was done, a ``timeout`` before ``count`` frames.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)
from websockets.uri import parse_uri

DEFAULT_URL = "ws://127.0.0.1:8081/v1/stream"
TOKEN_ENV = "CELLWORK_TOKEN"
UNCOUNTED = frozenset({"ping", "pong", "subscribed"})
HIDDEN = frozenset({"pong"})  # the answers to the reader's own keep-alive pings
PING = json.dumps({"type": "ping"})


class StreamError(Exception):
    """The socket could not be read to the end asked for; ``str()`` says why in one line."""


class StreamRefused(StreamError):
    """The server answered the handshake with an HTTP error (403: a bad or missing token)."""


class StreamUnreachable(StreamError):
    """No WebSocket server answered at the URL (refused, no answer in time, not WebSocket)."""


class StreamClosed(StreamError):
    """The server closed the socket (or the connection dropped) before the reader was done."""


class StreamTimedOut(StreamError):
    """``timeout`` passed before ``count`` frames came."""


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """What to read and for how long; ``count``/``timeout`` None: until stopped."""

    url: str = DEFAULT_URL
    token: str | None = None
    topics: tuple[str, ...] = ("feed",)
    count: int | None = None
    timeout: float | None = None
    ping_interval: float = 30.0  # seconds; 0 sends no keep-alive pings
    open_timeout: float = 10.0

    def __post_init__(self) -> None:
        check_url(self.url)
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be at least 1, not {self.count}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be positive, not {self.timeout}")
        if not self.ping_interval >= 0:
            raise ValueError(f"ping_interval must be 0 or more, not {self.ping_interval}")


def check_url(url: str) -> None:
    """Raise ValueError unless ``url`` is a ``ws://`` or ``wss://`` URL."""
    try:
        parse_uri(url)
    except InvalidURI as exc:
        raise ValueError(f"not a WebSocket URL (ws://... or wss://...): {url!r}") from exc


def parse_frame(message: str | bytes) -> Any:
    """The JSON value of a frame; a frame that is not JSON becomes its text, so that
    every printed line is still JSON."""
    try:
        return json.loads(message)
    except ValueError:
        return message.decode(errors="replace") if isinstance(message, bytes) else message


def frame_type(frame: Any) -> str | None:
    """The frame's ``type`` (None for a frame that is not an object with one)."""
    kind = frame.get("type") if isinstance(frame, dict) else None
    return kind if isinstance(kind, str) else None


def counts(frame: Any) -> bool:
    """Whether ``frame`` counts toward ``--count``: all but pings, pongs, subscribed acks."""
    return frame_type(frame) not in UNCOUNTED


def shown(frame: Any) -> bool:
    """Whether ``frame`` is printed: all but the pongs the reader's own pings earn."""
    return frame_type(frame) not in HIDDEN


def frame_line(frame: Any) -> str:
    """One frame as one line of compact JSON (the push services' own spelling)."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def subscribe_frame(topics: tuple[str, ...]) -> str:
    return frame_line({"type": "subscribe", "topics": list(topics)})


def closed_reason(exc: ConnectionClosed) -> str:
    """How the socket ended, from the close frame the server sent (if any)."""
    if exc.rcvd is None:
        return "the connection to the server was lost"
    reason = f" {exc.rcvd.reason}" if exc.rcvd.reason else ""
    return f"the server closed the socket ({exc.rcvd.code}{reason})"


class StreamReader:
    """Reads one socket as ``options`` say, handing each shown frame's line to ``emit``.

    ``counted`` is how many frames have counted so far."""

    def __init__(self, options: StreamOptions, emit: Callable[[str], None]) -> None:
        self.options = options
        self.emit = emit
        self.counted = 0

    async def run(self) -> None:
        """Read until ``count`` frames have counted or ``timeout`` has passed (with no
        ``count``: a normal end); raises StreamError otherwise."""
        options = self.options
        try:
            async with asyncio.timeout(options.timeout):
                await self._read()
        except TimeoutError:
            if options.count is None:
                return
            raise StreamTimedOut(
                f"timed out after {options.timeout:g} s with {self.counted} of "
                f"{options.count} frames from {options.url}"
            ) from None

    async def _read(self) -> None:
        async with await self._open() as ws:
            await ws.send(subscribe_frame(self.options.topics))
            keep_alive = asyncio.create_task(self._keep_alive(ws), name="stream-keep-alive")
            try:
                await self._receive(ws)
            finally:
                keep_alive.cancel()
                await asyncio.gather(keep_alive, return_exceptions=True)

    async def _open(self) -> ClientConnection:
        options = self.options
        headers = {"Authorization": f"Bearer {options.token}"} if options.token else None
        try:
            return await connect(
                options.url,
                additional_headers=headers,
                open_timeout=options.open_timeout,
                close_timeout=2,
            )
        except InvalidStatus as exc:
            response = exc.response
            hint = ""
            if response.status_code in (401, 403):
                hint = (
                    " (check the token)"
                    if options.token
                    else f" (no token given: --token or {TOKEN_ENV})"
                )
            raise StreamRefused(
                f"{options.url} refused the socket: HTTP {response.status_code} "
                f"{response.reason_phrase}{hint}"
            ) from None
        except TimeoutError:
            raise StreamUnreachable(
                f"{options.url} did not open a socket within {options.open_timeout:g} s"
            ) from None
        except OSError as exc:
            raise StreamUnreachable(f"cannot reach {options.url}: {exc.strerror or exc}") from None
        except WebSocketException as exc:  # answered, but not as a WebSocket server
            raise StreamUnreachable(f"{options.url} is not a WebSocket endpoint: {exc}") from None

    async def _receive(self, ws: ClientConnection) -> None:
        count = self.options.count
        while count is None or self.counted < count:
            try:
                message = await ws.recv()
            except ConnectionClosed as exc:
                raise StreamClosed(f"{closed_reason(exc)}: {self.options.url}") from None
            frame = parse_frame(message)
            if shown(frame):
                self.emit(frame_line(frame))
            if counts(frame):
                self.counted += 1

    async def _keep_alive(self, ws: ClientConnection) -> None:
        if self.options.ping_interval == 0:
            return
        while True:
            await asyncio.sleep(self.options.ping_interval)
            try:
                await ws.send(PING)
            except ConnectionClosed:  # the receiving side reports how it ended
                return


async def follow(options: StreamOptions, emit: Callable[[str], None]) -> None:
    """Read as ``options`` say until done or until SIGINT/SIGTERM, which close the socket
    and return normally; raises StreamError as ``StreamReader.run`` does."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    read = asyncio.create_task(StreamReader(options, emit).run(), name="stream-reader")
    stopped = asyncio.create_task(stop.wait(), name="stream-stop")
    try:
        await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (read, stopped):
            task.cancel()
        await asyncio.gather(read, stopped, return_exceptions=True)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if not read.cancelled():
        read.result()  # raises what the reader raised
