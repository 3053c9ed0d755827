"""Checks of the images a chat request carries, before anything reaches vLLM.

An image part must be a base64 data URL of a real image (png, jpeg, webp or gif) within the byte and
pixel limits. Remote URLs are refused: a replica fetching arbitrary URLs is a server-side request
forgery risk, and cluster nodes often have no egress.
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


def image_urls(body: Any) -> list[str]:
    """The image_url parts of a chat request's messages."""
    urls = []
    for message in body.messages or []:
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
        if not isinstance(content, list):
            continue
        for part in content:
            part = part if isinstance(part, dict) else getattr(part, "model_dump", lambda: {})()
            if part.get("type") == "image_url":
                image = part.get("image_url") or {}
                urls.append(image.get("url", "") if isinstance(image, dict) else str(image))
    return urls
