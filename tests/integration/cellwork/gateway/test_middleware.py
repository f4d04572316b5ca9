"""The edge's middleware behind the real server: bodies without a declared length are
held to the limit too, and the 413 still goes through the outer layers."""

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cellwork.gateway import HttpServer, edge_middleware, install_error_handlers


async def echo_size(request: Request) -> JSONResponse:
    return JSONResponse({"size": len(await request.body())})


def chunks(n: int, size: int = 300):
    async def gen():
        for _ in range(n):
            yield b"x" * size

    return gen()


async def test_a_chunked_body_over_the_limit_gets_413_and_one_under_it_arrives_whole() -> None:
    app = Starlette(
        routes=[Route("/", echo_size, methods=["POST"])],
        middleware=edge_middleware(max_body_bytes=1000, call_timeout=5.0),
    )
    install_error_handlers(app)
    server = HttpServer(app, "127.0.0.1", 0, reuse_port=False)
    port = await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            small = await client.post("/", content=chunks(3))  # 900 bytes, no length
            assert small.status_code == 200 and small.json() == {"size": 900}
            big = await client.post("/", content=chunks(5), headers={"x-request-id": "big-1"})
            assert big.status_code == 413
            assert big.json()["error"]["code"] == "payload_too_large"
            assert big.headers["x-request-id"] == "big-1"  # RequestContext is outside
            declared = await client.post("/", content=b"y" * 2000)
            assert declared.status_code == 413
    finally:
        await server.close()
