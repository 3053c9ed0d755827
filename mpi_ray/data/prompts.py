"""Chat messages per stage, built from one sample; the only place prompts are assembled.

- policy-free (Q, I): the input images, then the query. What MPI serves at inference.
- policy-aware (P, I, Q): the policy (text with its images in place), then the images and query.
  The in-context baseline, PoRo's second rollout group, and the VM-CPT sequence (x = P_T, P_I, I, Q, C, A).
  A ClevrPolicy override sample (a new policy under the old name) opens with the paper's "updated
  policy" preamble (Fig. 10); a GTAPolicy override sample carries its rule-override block in the policy.
Images are returned in the order their placeholders appear, as PNG bytes.
"""

from __future__ import annotations

from typing import Any

from mpi_ray.data.clevr_policy.records import OVERRIDE_PREAMBLE
from mpi_ray.data.formats import boxed, policy_segments

Message = dict[str, Any]


def cot_target(sample: dict[str, Any]) -> str:
    if not sample.get("cot"):
        raise ValueError(f"sample {sample['sample_id']} has no CoT")
    return f"{sample['cot']}\n{boxed(sample['answer'])}"


def direct_target(sample: dict[str, Any]) -> str:
    return boxed(sample["answer"])


def user_turn(sample: dict[str, Any], with_policy: bool) -> tuple[Message, list[bytes]]:
    content: list[dict[str, str]] = []
    images: list[bytes] = []
    if with_policy:
        if sample.get("split") == "override" and sample["dataset"].startswith("clevr_policy"):
            content.append({"type": "text", "text": OVERRIDE_PREAMBLE.format(name=sample["policy_name"]) + "\n"})
        for kind, part in policy_segments(sample["policy_text"], list(sample["policy_images"])):
            if kind == "text":
                content.append({"type": "text", "text": part})
            else:
                content.append({"type": "image"})
                images.append(part)
        content.append({"type": "text", "text": "\n\n"})
    for image in sample["images"]:
        content.append({"type": "image"})
        images.append(image)
    content.append({"type": "text", "text": sample["query"]})
    return {"role": "user", "content": content}, images


def conversation(sample: dict[str, Any], with_policy: bool, target: str | None) -> tuple[list[Message], list[bytes]]:
    """The user turn, plus the assistant turn when a target is given."""
    user, images = user_turn(sample, with_policy)
    messages = [user]
    if target is not None:
        messages.append({"role": "assistant", "content": target})
    return messages, images
