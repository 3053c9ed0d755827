"""Text formats shared by every dataset (ClevrPolicy, GTAPolicy): the think-then-box answer format,
and how a policy's text and pictures interleave."""

from __future__ import annotations

from mpi_ray.data.schema import POLICY_IMAGE_MARK

# Reference §4.6: the format prompt appended to every query of a CoT/RL-trained model.
FORMAT_INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. "
    "The final answer MUST BE put in \\boxed{}."
)


def with_format_instruction(question: str) -> str:
    """The query a sample stores: the question, then the format instruction on its own line."""
    return f"{question}\n{FORMAT_INSTRUCTION}"


def boxed(answer: str) -> str:
    return f"\\boxed{{{answer}}}"


def policy_segments(policy_text: str, policy_images: list[bytes]) -> list[tuple[str, str | bytes]]:
    """A policy as ("text", str) and ("image", PNG bytes) parts in reading order: the i-th
    POLICY_IMAGE_MARK in the text is where the i-th policy image goes. Empty text parts are dropped."""
    parts = policy_text.split(POLICY_IMAGE_MARK)
    if len(parts) - 1 != len(policy_images):
        raise ValueError(f"policy text has {len(parts) - 1} image marks but {len(policy_images)} policy images")
    segments: list[tuple[str, str | bytes]] = []
    for index, text in enumerate(parts):
        if text:
            segments.append(("text", text))
        if index < len(policy_images):
            segments.append(("image", policy_images[index]))
    return segments
