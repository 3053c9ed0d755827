"""The visual mask (VM-CPT) and the response mask (SFT) on a small hand-checked example."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mpi_ray.data.encode import IGNORE, BadSample, Encoder, response_labels, visual_mask_labels
from mpi_ray.data.schema import POLICY_IMAGE_MARK, make_sample
from mpi_ray.model.loading import VisualTokens


def _png(color: tuple[int, int, int], size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _sample(**overrides) -> dict:
    fields = dict(
        sample_id="s-1", dataset="unit", split="train", policy_name="P",
        policy_text=f"--- Policy: P ---\n# Condition 1: an object like {POLICY_IMAGE_MARK} means Case 1.\n---",
        policy_images=[_png((0, 200, 200), 56)], images=[_png((200, 0, 0), 112)], image_names=["image/s-1.png"],
        query="According to Policy: P, what should be the response for the given image?",
        cot="<think>Condition 1 holds.</think>", answer="Case 1",
    )
    fields.update(overrides)
    return make_sample(**fields)


def test_visual_mask_on_hand_example() -> None:
    visual = VisualTokens(image=5, video=6, vision_start=3, vision_end=4)
    ids = np.array([1, 3, 5, 5, 4, 9, 6, 10])
    assert visual_mask_labels(ids, visual).tolist() == [1, 3, IGNORE, IGNORE, 4, 9, IGNORE, 10]


def test_response_labels_cover_only_the_tail() -> None:
    assert response_labels(np.array([7, 8, 9, 10]), [9, 10]).tolist() == [IGNORE, IGNORE, 9, 10]
    assert response_labels(np.array([7, 8, 9, 10]), [8, 10]) is None


def test_cpt_labels_every_token_but_the_visual_ones(tiny_model_dir: Path) -> None:
    encoder = Encoder(str(tiny_model_dir))
    row = encoder.cpt(_sample())
    ids, labels = row["input_ids"], row["labels"]
    visual = np.isin(ids, encoder.visual.masked)
    # One 56x56 policy crop (2x2 merged = 4 tokens) and one 112x112 image (4x4 = 16 tokens).
    assert row["image_grid_thw"].tolist() == [[1, 4, 4], [1, 8, 8]]
    assert int(visual.sum()) == 4 + 16
    assert (labels[visual] == IGNORE).all()
    assert (labels[~visual] == ids[~visual]).all()
    text = encoder.processor.tokenizer.decode(ids[~visual])
    assert "Condition 1" in text and "According to Policy: P" in text and "\\boxed{Case 1}" in text
    # Policy image comes before the input image, as in x = (P_T, P_I, I, Q, C, A).
    assert text.index("Policy: P") < text.index("According to Policy")


def test_sft_labels_exactly_the_response(tiny_model_dir: Path) -> None:
    encoder = Encoder(str(tiny_model_dir))
    tokenizer = encoder.processor.tokenizer
    for target, expected in (("cot", "<think>Condition 1 holds.</think>\n\\boxed{Case 1}<|im_end|>"),
                             ("direct", "\\boxed{Case 1}<|im_end|>")):
        row = encoder.sft(_sample(), target)
        learned = row["labels"] != IGNORE
        assert tokenizer.decode(row["input_ids"][learned]) == expected
        first = int(np.argmax(learned))
        assert learned[first:].all() and not learned[:first].any()
        # The policy never enters the SFT sequence; only the input image does.
        assert "Condition 1:" not in tokenizer.decode(row["input_ids"])
        assert row["image_grid_thw"].tolist() == [[1, 8, 8]]


def test_bad_samples_raise_with_their_id(tiny_model_dir: Path) -> None:
    encoder = Encoder(str(tiny_model_dir), max_seq_len=64)
    with pytest.raises(BadSample, match="s-1.*exceed max_seq_len 64"):
        encoder.cpt(_sample())
    with pytest.raises(BadSample, match="s-2.*image 0 does not decode"):
        Encoder(str(tiny_model_dir)).sft(_sample(sample_id="s-2", images=[b"not a png"]), "direct")
    with pytest.raises(ValueError, match="no CoT"):
        Encoder(str(tiny_model_dir)).sft(_sample(cot=None), "cot")
