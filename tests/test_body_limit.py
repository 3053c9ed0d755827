"""The serving ingress's body bound, as an ASGI wrapper: declared and chunked bodies over the limit get
413 before the app has them; bodies within it, and lifespan events, pass through untouched."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from mpi_ray.serve.body_limit import BodyLimit


class Body(BaseModel):  # at module level: FastAPI resolves the route's (postponed) annotation here
    text: str


async def _app(scope, receive, send) -> None:
    """Reads the whole body (as FastAPI does before a handler), then answers 200 with its length."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def _call(chunks: list[bytes], headers: list[tuple[bytes, bytes]], limit: int = 100) -> tuple[int, bytes, int]:
    """(status, response body, chunks the client handed over) for a body sent in `chunks`."""
    pending = list(chunks)
    sent: list[dict] = []

    async def receive() -> dict:
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(BodyLimit(_app, limit)({"type": "http", "headers": headers}, receive, send))
    return sent[0]["status"], sent[1]["body"], len(chunks) - len(pending)


def test_a_chunked_body_over_the_limit_is_refused_while_it_arrives() -> None:
    status, body, read = _call([b"x" * 60] * 10, [])  # no Content-Length: chunked
    assert status == 413 and b"over 100 bytes" in body
    assert read == 2  # refused at the chunk that crossed the limit, the rest never read


def test_a_declared_length_over_the_limit_is_refused_before_any_read() -> None:
    status, _, read = _call([b"x" * 10], [(b"content-length", b"5000")])
    assert (status, read) == (413, 0)
    assert _call([b"x"], [(b"content-length", b"-1")])[0] == 413


def test_bodies_within_the_limit_and_other_scopes_pass() -> None:
    assert _call([b"x" * 50, b"y" * 50], [])[:2] == (200, b"100")
    assert _call([b"x" * 100], [(b"content-length", b"100")])[:2] == (200, b"100")
    seen = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["type"])

    asyncio.run(BodyLimit(app, 1)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]


def test_behind_a_fastapi_route_that_parses_the_body_the_answer_is_413() -> None:
    """FastAPI turns any error while reading the body into 400; the bound answers 413 itself."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: Body) -> dict:
        return {"n": len(body.text)}

    def post(chunks: list[bytes]) -> tuple[int, list[bytes]]:
        pending, sent = list(chunks), []

        async def receive() -> dict:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
                 "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
        asyncio.run(BodyLimit(app, 300)(scope, receive, send))
        return sent[0]["status"], [m.get("body", b"") for m in sent[1:]]

    assert post([b'{"text": "', b"a" * 600, b'"}']) == (413, [b'{"detail": "request body over 300 bytes"}'])
    assert post([b'{"text": "', b"a" * 100, b'"}']) == (200, [b'{"n":100}'])
