"""The rollout engine (real vLLM in a Ray actor on the session cluster): log-probs that match the
learner's, generation from an image with log-probs and versions, and a weight sync (on vLLM's
weight-transfer protocol with the object-store backend, and eval's swap from a checkpoint folder) that
the next samples and log-probs follow."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from mpi_ray.config.schema import RolloutConfig

pytestmark = pytest.mark.slow

SEQUENCE = "<|im_start|>user\nAccording to Policy: L4-Simuna, which case?<|im_end|>\n<|im_start|>assistant\n\\boxed{Case 3}"
PROMPT = {"prompt": SEQUENCE, "images": []}


def _png(color: tuple[int, int, int], side: int = 112) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buffer, format="PNG")
    return buffer.getvalue()


# 112 x 112 pixels: 8 x 8 patches of 14, merged 2 x 2 -> 16 visual tokens in place of the one <|image_pad|>
IMAGE_PROMPT = {"prompt": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which case?<|im_end|>\n"
                          "<|im_start|>assistant\n", "images": [_png((200, 30, 30))]}
BOUNDS = {"min_pixels": 3136, "max_pixels": 50176}  # configs/default.yaml's model.min_pixels / max_pixels


def _hf_logprobs(model: torch.nn.Module, ids: list[int]) -> list[float]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()


def _sync(engine, model: torch.nn.Module, version: int, source=None) -> None:
    """The learner's end of the protocol (the object-store trainer engine from vLLM's factory) straight
    into one engine: init, start, update (chunks through the object store), finish."""
    from mpi_ray.rollout.weight_transfer import EnginePoolClient, StateDictSource, trainer_engine

    client = EnginePoolClient([engine], workers_per_engine=1)
    client.version = version
    trainer_engine("object_store", 0, client, source or StateDictSource(model), chunk_mb=1).send_weights()


@pytest.fixture(scope="module")
def model_112(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a processor whose own image bound (112 x 112: 16 visual tokens) differs from the
    config's (224 x 224: 64): only the bounds every path is given can make them agree."""
    import shutil

    from mpi_ray.model.loading import load_processor
    from mpi_ray.model.tiny import IMAGE_MIN_PIXELS, build_processor

    out = tmp_path_factory.mktemp("model_112") / "xs"
    shutil.copytree(tiny_model_dir, out)
    build_processor(load_processor(tiny_model_dir).tokenizer, IMAGE_MIN_PIXELS, 112 * 112).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def engine(ray_local, model_112: Path):
    from mpi_ray.rollout.engine import RolloutActor

    cfg = RolloutConfig(max_prompt_len=512, max_response_len=64, max_num_seqs=16)
    # the default config's pixel bounds, on a model whose own processor stops at 112 x 112
    actor = RolloutActor.options(num_cpus=1).remote(str(model_112), cfg, 0, 32, "float32", BOUNDS)
    yield actor
    ray_local.kill(actor)


def test_engine_logprobs_match_the_learner_and_samples_carry_logprobs(ray_local, engine, tiny_model_dir: Path) -> None:
    from mpi_ray.model.loading import load_model, load_processor

    ids = load_processor(tiny_model_dir).tokenizer(SEQUENCE)["input_ids"]
    engine_logp = ray_local.get(engine.prompt_logprobs.remote(PROMPT))
    assert engine_logp == pytest.approx(_hf_logprobs(load_model(tiny_model_dir).eval(), ids), abs=2e-3)
    result = ray_local.get(engine.generate.remote([PROMPT, IMAGE_PROMPT], n=3, max_tokens=8))
    assert result["version"] == 0 and [len(samples) for samples in result["samples"]] == [3, 3]
    image_prompt_ids = load_processor(tiny_model_dir).tokenizer(IMAGE_PROMPT["prompt"])["input_ids"]
    assert result["prompt_tokens"] == [len(ids), len(image_prompt_ids) - 1 + 16]  # the image reached the model
    # a 224 x 224 image: 64 visual tokens within the configured bounds, as the learner's processor makes
    # (the tiny processor's own bound, 112 x 112, would give 16: the sampler and learner would differ)
    large = {**IMAGE_PROMPT, "images": [_png((30, 200, 30), 224)]}
    learner = load_processor(tiny_model_dir, **BOUNDS)
    expected = learner(text=[large["prompt"]], images=[Image.open(io.BytesIO(large["images"][0]))], return_tensors="np")
    assert ray_local.get(engine.generate.remote([large], n=1, max_tokens=2))["prompt_tokens"] == \
        [len(expected["input_ids"][0])] == [len(image_prompt_ids) - 1 + 64]
    for sample in result["samples"][0] + result["samples"][1]:
        assert 1 <= len(sample["logprobs"]) == len(sample["token_ids"]) <= 8
        assert all(logprob <= 0 for logprob in sample["logprobs"])


def test_an_engine_started_from_one_checkpoint_takes_another_as_its_start_weights(ray_local, engine, tmp_path: Path,
                                                                                   tiny_model_dir: Path) -> None:
    """rollout.prestart: engines start from the stage before RL's input model, then RL installs its start
    model in place; they must then score exactly as that model, still at version 0."""
    from mpi_ray.model.loading import load_model, load_processor
    from mpi_ray.model.tiny import build_tiny

    ids = load_processor(tiny_model_dir).tokenizer(SEQUENCE)["input_ids"]
    other = build_tiny(tmp_path / "seed2", size="xs", seed=2)
    ray_local.get(engine.load_start_weights.remote(str(other)))
    assert ray_local.get(engine.get_version.remote()) == 0
    assert ray_local.get(engine.prompt_logprobs.remote(PROMPT)) == pytest.approx(
        _hf_logprobs(load_model(other).eval(), ids), abs=2e-3)
    ray_local.get(engine.load_start_weights.remote(str(tiny_model_dir)))  # back: the later tests expect it
    assert ray_local.get(engine.prompt_logprobs.remote(PROMPT)) == pytest.approx(
        _hf_logprobs(load_model(tiny_model_dir).eval(), ids), abs=2e-3)


def test_after_a_sync_the_engine_samples_from_the_new_weights(ray_local, engine, tmp_path: Path,
                                                             tiny_model_dir: Path) -> None:
    from mpi_ray.model.loading import load_model, load_processor
    from mpi_ray.model.tiny import build_tiny

    ids = load_processor(tiny_model_dir).tokenizer(SEQUENCE)["input_ids"]
    new_model = load_model(build_tiny(tmp_path / "seed1", size="xs", seed=1)).eval()
    _sync(engine, new_model, 1)  # chunks of at most 1 MB: the 3 MB model goes in several
    assert ray_local.get(engine.get_version.remote()) == 1
    after = ray_local.get(engine.prompt_logprobs.remote(PROMPT))
    assert after == pytest.approx(_hf_logprobs(new_model, ids), abs=2e-3)
    with pytest.raises(ray_local.exceptions.RayTaskError, match="not newer"):
        _sync(engine, new_model, 1)
    with pytest.raises(ray_local.exceptions.RayTaskError, match="start weights come first"):
        ray_local.get(engine.load_start_weights.remote(str(tiny_model_dir)))

    # eval's swap: the same engine takes a checkpoint folder from disk and scores as that model does
    assert ray_local.get(engine.load_checkpoint.remote(str(tiny_model_dir), 2)) == 2
    back = ray_local.get(engine.prompt_logprobs.remote(PROMPT))
    assert back == pytest.approx(_hf_logprobs(load_model(tiny_model_dir).eval(), ids), abs=2e-3)
    assert back != pytest.approx(after, abs=2e-3)


def test_the_sync_check_sees_a_vision_weight_left_behind(ray_local, engine, tmp_path: Path, tiny_model_dir: Path) -> None:
    """The probe carries an image: a sync that skips one vision-tower tensor fails the check, the full
    sync passes it (the learner's probe log-probs on the learner's own input path)."""
    from mpi_ray.model.loading import load_model
    from mpi_ray.model.tiny import build_tiny
    from mpi_ray.rl.sequences import SequenceEncoder
    from mpi_ray.rollout.weight_sync import probe_logprobs, verify
    from mpi_ray.rollout.weight_transfer import StateDictSource

    learner = load_model(build_tiny(tmp_path / "seed2", size="xs", seed=2)).eval()
    expected = probe_logprobs(learner, SequenceEncoder(str(tiny_model_dir)))
    vision = [name for name in learner.state_dict() if ".visual." in name and name.endswith("patch_embed.proj.weight")]
    assert len(vision) == 1

    class SkipsOne(StateDictSource):
        def metadata(self):
            return [meta for meta in super().metadata() if meta.name != vision[0]]

        def __iter__(self):
            return ((name, tensor) for name, tensor in super().__iter__() if name != vision[0])

    version = ray_local.get(engine.get_version.remote())
    _sync(engine, learner, version + 1, SkipsOne(learner))
    with pytest.raises(RuntimeError, match="did not apply"):
        verify([engine], expected, 0.05)
    _sync(engine, learner, version + 2)
    assert verify([engine], expected, 0.05) < 2e-3


def test_the_engine_the_learner_eval_and_serving_see_the_same_prompt(ray_local, engine, tmp_path: Path,
                                                                     model_112: Path) -> None:
    """One sample with a 224 x 224 scene through the four paths, with configs/default.yaml's pixel bounds
    (the tiny processor's own bound is 112 x 112: 16 visual tokens instead of 64): eval's prompt builder,
    the learner's sequence encoder and the rollout engine give the same token ids and 64 visual tokens;
    the Serve deployment's engine takes the same bounds from the same function (Serve itself is run
    in test_serve.py)."""
    from mpi_ray.config import load_config
    from mpi_ray.data.clevr_policy.__main__ import main as generate_clevr
    from mpi_ray.data.shards import read_split
    from mpi_ray.eval.suites import PromptBuilder
    from mpi_ray.model.loading import image_bounds, load_processor
    from mpi_ray.rl.batch import POLICY_FREE, LearnerSample
    from mpi_ray.rl.sequences import SequenceEncoder
    from mpi_ray.serve.app import llm_config

    from conftest import REPO

    cfg = load_config(REPO / "configs/default.yaml", [])
    bounds = image_bounds(cfg.model.min_pixels, cfg.model.max_pixels)
    assert bounds == BOUNDS
    generate_clevr(["--out", str(tmp_path / "data"), "--depth", "2", "--variant", "T", "--policies", "1",
                    "--train-per-policy", "4", "--test", "2", "--general", "2", "--image-size", "224"])
    sample = read_split(tmp_path / "data", "test")[0]

    text, images, eval_tokens = PromptBuilder(str(model_112), 1792, **bounds)(sample, with_policy=False)
    learner = SequenceEncoder(str(model_112), **bounds)
    eos = learner.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    batch = learner.batch([LearnerSample("p", {"prompt": text, "images": images}, (eos,), 0.0, POLICY_FREE, 0, None)])
    learner_ids = batch["input_ids"][0][batch["attention_mask"][0].bool()][:-1].tolist()  # the prompt's tokens
    engine_tokens = ray_local.get(engine.generate.remote([{"prompt": text, "images": images}], n=1, max_tokens=1))["prompt_tokens"]
    engine_logp = ray_local.get(engine.prompt_logprobs.remote({"prompt": text, "images": images}))

    image_token = learner.image_token_id
    assert learner_ids.count(image_token) == 64  # 224 x 224 within the bounds; the saved processor's 112 px gives 16
    assert len(learner_ids) == eval_tokens == engine_tokens[0] == len(engine_logp) + 1
    own = load_processor(model_112)(text=[text], images=[Image.open(io.BytesIO(images[0]))], return_tensors="np")
    assert list(own["input_ids"][0]).count(image_token) == 16  # the defaults that differ, had anyone used them
    assert llm_config(str(model_112), cfg).engine_kwargs["mm_processor_kwargs"] == bounds
