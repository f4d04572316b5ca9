"""The load client against a real socket server: keep-alive reuse, bodies, failures."""

import asyncio

import orjson
import pytest

from cellwork.testing.httpload import HttpError, LoadClient


async def test_requests_reuse_kept_alive_connections_and_read_bodies() -> None:
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            method, path = head.split(b" ")[:2]
            answer = orjson.dumps(
                {"method": method.decode(), "path": path.decode(), "body": body.decode()}
            )
            close = path == b"/close"
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n%s\r\n"
                % (len(answer), b"Connection: close\r\n" if close else b"")
                + answer
            )
            await writer.drain()
            if close:
                break
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, LoadClient(f"http://127.0.0.1:{port}", connections=2) as client:
        for n in range(5):
            status, body = await client.get(f"/x/{n}", {"X-N": str(n)})
            assert status == 201 and orjson.loads(body)["path"] == f"/x/{n}"
        assert accepted == 1  # one connection, kept alive
        status, body = await client.post("/p", {"a": 1})
        assert orjson.loads(body) == {"method": "POST", "path": "/p", "body": '{"a":1}'}
        await client.get("/close")
        await client.get("/after")
        assert accepted == 2  # the server closed one: a new one was opened
        answers = await asyncio.gather(*(client.get("/c") for _ in range(6)))
        assert [s for s, _ in answers] == [201] * 6
        assert accepted <= 3  # never more than `connections` at once


async def test_a_refused_connection_is_an_http_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with LoadClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(HttpError):
            await client.get("/")


def test_only_plain_http_urls() -> None:
    with pytest.raises(ValueError):
        LoadClient("https://example.org")
