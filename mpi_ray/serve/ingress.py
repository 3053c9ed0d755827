"""The OpenAI-compatible ingress of the policy-free model: Ray Serve LLM's own, plus up-front checks of
the media every request carries (mpi_ray/serve/images.py), on every route that reaches vLLM.

A request must never make a replica fetch a URL, take it down or stall it: the body's size (counted
while it arrives, chunked or not: body_limit.py), its image count and every image are checked before
anything reaches vLLM, whatever the content part's shape; audio transcription is not served.
Malformed JSON and schema violations are answered 4xx by FastAPI; prompts past the context length by
vLLM.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, HTTPException, Request
from fastapi.responses import Response
from ray.llm._internal.serve.core.ingress.ingress import (ChatCompletionRequest, CompletionRequest, EmbeddingRequest,
                                                          OpenAiIngress, ScoreRequest, TokenizeCompletionRequest,
                                                          TranscriptionRequest)

from mpi_ray.serve.body_limit import BodyLimit
from mpi_ray.serve.images import ImageRejected, check_image_url, media_urls


class CheckedIngress(OpenAiIngress):
    """OpenAiIngress whose routes check a request's media first (limits bound with ingress_extra_kwargs)."""

    def __init__(self, llm_deployments: Any, model_cards: Any, *, max_image_bytes: int = 4 * 1024 * 1024,
                 max_image_pixels: int = 4096 * 4096, max_images: int = 8, max_body_bytes: int = 64 * 1024 * 1024,
                 **kwargs: Any):
        super().__init__(llm_deployments, model_cards, **kwargs)
        self.max_image_bytes, self.max_image_pixels = max_image_bytes, max_image_pixels
        self.max_images, self.max_body_bytes = max_images, max_body_bytes

    def _set_asgi_app(self, app: Any) -> None:
        """Ray Serve installs the FastAPI app here after __init__: wrap it so every body is bounded while
        it arrives, declared or chunked (Serve's ASGIAppReplicaWrapper hook, next in the MRO)."""
        super()._set_asgi_app(BodyLimit(app, self.max_body_bytes))  # type: ignore[misc]

    async def _check(self, request: Request) -> None:
        try:
            for url in media_urls(await request.json(), self.max_images):
                check_image_url(url, self.max_image_bytes, self.max_image_pixels)
        except ImageRejected as error:
            raise HTTPException(status_code=400, detail=str(error)) from None

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        await self._check(request)
        return await super().chat(body, request)

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        await self._check(request)
        return await super().completions(body, request)

    async def embeddings(self, body: EmbeddingRequest, request: Request) -> Response:
        await self._check(request)
        return await super().embeddings(body, request)

    async def score(self, body: ScoreRequest, request: Request) -> Response:
        await self._check(request)
        return await super().score(body, request)

    async def tokenize(self, body: TokenizeCompletionRequest, request: Request) -> Response:
        await self._check(request)
        return await super().tokenize(body, request)

    async def transcriptions(self, body: Annotated[TranscriptionRequest, Form()], request: Request) -> Response:
        raise HTTPException(status_code=404, detail="audio transcription is not served by this model")
