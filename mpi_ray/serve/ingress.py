"""The OpenAI-compatible ingress of the policy-free model: Ray Serve LLM's own, plus up-front checks of
the images a chat request carries (mpi_ray/serve/images.py).

A request must never be able to take a replica down or stall it: bad images get 400 before anything
reaches vLLM. Malformed JSON and schema violations are answered 4xx by FastAPI; prompts past the
context length by vLLM.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import Response
from ray.llm._internal.serve.core.ingress.ingress import ChatCompletionRequest, OpenAiIngress

from mpi_ray.serve.images import ImageRejected, check_image_url, image_urls


class CheckedIngress(OpenAiIngress):
    """OpenAiIngress whose chat endpoint checks images first (limits bound with ingress_extra_kwargs)."""

    def __init__(self, llm_deployments: Any, model_cards: Any, *, max_image_bytes: int = 4 * 1024 * 1024,
                 max_image_pixels: int = 4096 * 4096, **kwargs: Any):
        super().__init__(llm_deployments, model_cards, **kwargs)
        self.max_image_bytes, self.max_image_pixels = max_image_bytes, max_image_pixels

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        for url in image_urls(body):
            try:
                check_image_url(url, self.max_image_bytes, self.max_image_pixels)
            except ImageRejected as error:
                raise HTTPException(status_code=400, detail=str(error)) from None
        return await super().chat(body, request)
