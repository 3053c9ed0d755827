"""Checks of the images a chat request carries, before anything reaches vLLM.

An image part must be a base64 data URL of a real image (png, jpeg, webp or gif) within the byte and
pixel limits. Remote URLs are refused: a replica fetching arbitrary URLs is a server-side request
forgery risk, and cluster nodes often have no egress. The whole body is searched, not only the
parts typed "image_url": vLLM's parsers also load "input_image" parts, untyped {"image_url": ...}
parts and "image_pil" values.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from PIL import Image

ALLOWED_MEDIA = {"image/png", "image/jpeg", "image/jpg", "image/webp", "image/gif"}


class ImageRejected(ValueError):
    pass


def check_image_url(url: str, max_bytes: int, max_pixels: int) -> None:
    """Raise ImageRejected unless `url` is a base64 data URL of a decodable image within the limits."""
    if not url.startswith("data:"):
        raise ImageRejected("only data: URLs of images are accepted (base64-encoded png, jpeg, webp or gif)")
    header, _, payload = url[5:].partition(",")
    media, _, encoding = header.partition(";")
    if media.lower() not in ALLOWED_MEDIA or encoding.lower() != "base64":
        raise ImageRejected(f"data URL of type {media or 'unknown'!r} is not a base64 image ({', '.join(sorted(ALLOWED_MEDIA))})")
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise ImageRejected(f"image is larger than {max_bytes} bytes")
    try:
        blob = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected("image data is not valid base64") from None
    try:
        with Image.open(io.BytesIO(blob)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected(f"image of {width}x{height} pixels exceeds {max_pixels} pixels")
            image.verify()
    except ImageRejected:
        raise
    except Exception:  # noqa: BLE001 - any undecodable bytes are the client's error
        raise ImageRejected("image data does not decode as an image") from None


# Keys under which a request names an image: the value must be a data URL (checked by check_image_url).
IMAGE_KEYS = frozenset({"image_url", "input_image"})
# Media vLLM's parsers would load (some by URL) that this server never takes.
REFUSED_KEYS = frozenset({"image", "image_pil", "image_embeds", "video", "video_url", "video_embeds", "audio",
                          "audio_url", "input_audio", "file", "file_url", "file_id", "file_data"})
# Subtrees that describe tools or output formats: names like "image" there are parameter names, not media.
NOT_CONTENT = frozenset({"tools", "functions", "tool_choice", "response_format", "structured_outputs",
                         "guided_json", "json_schema"})


def media_urls(payload: Any, max_images: int) -> list[str]:
    """Every image URL anywhere in a request body, whatever the content part's shape (typed, untyped,
    "input_image", nested), before anything is decoded. Raises ImageRejected for a media kind this
    server refuses, an image value of the wrong shape, or more than `max_images` images."""
    urls: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key in NOT_CONTENT:
                continue
            if key in REFUSED_KEYS:
                raise ImageRejected(f"{key!r} content is not accepted; send images as image_url data URLs")
            if key in IMAGE_KEYS:
                urls.append(_url_of(key, value))
                if len(urls) > max_images:
                    raise ImageRejected(f"more than {max_images} images in one request")
                continue
            walk(value)

    walk(payload)
    return urls


def _url_of(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("url"), str) and set(value) <= {"url", "detail"}:
        return value["url"]
    raise ImageRejected(f"{key!r} must be a data URL or {{'url': data URL}}")
