"""Records in the one sample schema: a policy instance, or a policy-free general question."""

from __future__ import annotations

from typing import Any

from mpi_ray.data.clevr_policy.cot import cot_target
from mpi_ray.data.clevr_policy.general import GENERAL_DATASET, GeneralQuestion
from mpi_ray.data.clevr_policy.render import render_png
from mpi_ray.data.clevr_policy.sampling import Instance
from mpi_ray.data.clevr_policy.scene import SceneGraph
from mpi_ray.data.formats import with_format_instruction
from mpi_ray.data.schema import make_sample

POLICY_QUESTION = "According to Policy: {name}, what should be the response for the given image?"
# Policy Override (paper Fig. 10). The query holds only the question; a stage that shows the new
# policy puts OVERRIDE_PREAMBLE, then policy_text, then the query.
OVERRIDE_PREAMBLE = "Suppose we have an updated Policy: {name} as follows:"
OVERRIDE_QUESTION = "According to the updated Policy: {name}, what should be the response for the given image?"


def policy_record(
    dataset: str,
    variant: str,
    split: str,
    sample_id: str,
    instance: Instance,
    question: str,
    with_cot: bool,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One sample: the rendered scene asked under the instance's policy, answer from its gold path."""
    policy, decision = instance.policy, instance.decision
    cot = cot_target(policy.tree, decision, instance.scene["objects"], policy.document) if with_cot else None
    meta = {
        "policy_id": policy.policy_id,
        "depth": policy.tree.depth,
        "variant": variant,
        "question": question,
        "gold_path": [{"condition": step.node_id, "holds": step.holds} for step in decision.steps],
        "leaf": decision.leaf.node_id,
        "sampled_by": instance.sampled_by,
        "policy_images": [image.describe() for image in policy.document.images],
        **(extra_meta or {}),
    }
    return make_sample(
        sample_id=sample_id,
        dataset=dataset,
        split=split,
        policy_name=policy.name,
        policy_text=policy.document.text,
        policy_images=[image.png for image in policy.document.images],
        images=[render_png(instance.scene)],
        image_names=[f"image/{sample_id}.png"],
        query=with_format_instruction(question),
        cot=cot,
        answer=decision.answer,
        truth=instance.scene,
        meta=meta,
    )


def general_record(sample_id: str, scene: SceneGraph, question: GeneralQuestion, split: str = "general") -> dict[str, Any]:
    """One policy-free question: empty policy fields, answer a number or yes/no."""
    return make_sample(
        sample_id=sample_id,
        dataset=GENERAL_DATASET,
        split=split,
        policy_name="",
        policy_text="",
        images=[render_png(scene)],
        image_names=[f"image/{sample_id}.png"],
        query=with_format_instruction(question.question),
        answer=question.answer,
        truth=scene,
        meta={"question": question.question, **question.describe()},
    )
