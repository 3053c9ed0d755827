"""Evaluation logic without engines: referral against gold paths, the judge client, scoring, prompts of
each suite, the checkpoint plan of the eval stage, and the report with its plots."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from conftest import HANG_GUARD_S, REPO, small_clevr
from mpi_ray.config.loader import load_config
from mpi_ray.data.clevr_policy.records import OVERRIDE_PREAMBLE
from mpi_ray.data.shards import read_split
from mpi_ray.eval import referral
from mpi_ray.eval.report import write_report
from mpi_ray.eval.scoring import constant_answer_accuracy, mean_scores, score_eval
from mpi_ray.eval.suites import build_requests, spread, suite_rows


@pytest.fixture(scope="module")
def clevr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clevr_eval") / "data"
    return small_clevr(out, variant="M", train_per_policy=6, test=6, general=4, cot_fraction=1.0, seed=5)


def test_the_gold_cot_walks_exactly_the_gold_path(clevr_dir: Path) -> None:
    for sample in read_split(clevr_dir, "train"):
        gold = json.loads(sample["meta"])["gold_path"]
        result = referral.path_referral(sample["cot"], gold)
        assert result == {"exact": True, "recall": 1.0, "precision": 1.0, "diverges_at": None}


def test_referral_finds_where_the_reasoning_leaves_the_path() -> None:
    gold = [{"condition": "1", "holds": True}, {"condition": "1.1", "holds": False}, {"condition": "1.1.2", "holds": True}]
    wrong_branch = "Condition 1 checks x. Condition 1.2 checks y. Condition 1.2.1 checks z."
    assert referral.path_referral(wrong_branch, gold) == {"exact": False, "recall": 1 / 3, "precision": 1 / 3, "diverges_at": 1}
    stops_early = "Condition 1 checks x. Condition 1.1 shows an example object."
    assert referral.path_referral(stops_early, gold)["diverges_at"] == 2
    assert referral.path_referral("no reasoning at all", gold)["diverges_at"] == 0
    summary = referral.summarize_paths([referral.path_referral(t, gold) for t in (wrong_branch, stops_early)])
    assert summary["path_exact"] == 0 and summary["branching_errors_by_depth"] == {"1": 1, "2": 1}


def test_decisions_say_which_condition_the_errors_come_from() -> None:
    gold = [{"condition": "1", "holds": True}, {"condition": "1.1", "holds": False}, {"condition": "1.1.2", "holds": True}]
    walked = "Condition 1 checks x. Condition 1.1 checks y. Condition 1.1.2 checks z."
    assert referral.decisions(walked, gold, correct=True) == [("1", True), ("1.1", True), ("1.1.2", True)]
    assert referral.decisions(walked, gold, correct=False) == [("1", True), ("1.1", True), ("1.1.2", False)]
    wrong_branch = "Condition 1 checks x. Condition 1.2 checks y."
    assert referral.decisions(wrong_branch, gold, correct=False) == [("1", False)]
    stops_early = "Condition 1 checks x."
    assert referral.decisions(stops_early, gold, correct=False) == [("1", False)]
    assert referral.decisions("no reasoning", gold, correct=False) == []
    summary = referral.summarize_decisions([referral.decisions(t, gold, c) for t, c in
                                            ((walked, True), (walked, False), (wrong_branch, False))])
    assert summary == {"1": {"reached": 3, "right": 2}, "1.1": {"reached": 2, "right": 2}, "1.1.2": {"reached": 2, "right": 1}}
    assert list(referral.summarize_decisions([[("1.1.1", True), ("1.2", True), ("1", True)]])) == ["1", "1.2", "1.1.1"]


def test_gta_referral_checks_the_cited_rules_against_the_fired_ones() -> None:
    from mpi_ray.data.gta_policy.dataset import build_splits
    from mpi_ray.data.gta_policy.generator import generate_split

    records = build_splits(generate_split("train", 40, seed=3), generate_split("test", 4, seed=3), "gta_policy")["train"]
    with_rules = [(r["cot"], json.loads(r["meta"])["rule_ids"]) for r in records if json.loads(r["meta"])["rule_ids"]]
    assert len(with_rules) >= 20
    for cot, fired in with_rules:  # the gold CoT cites exactly the rules that fire
        assert referral.rule_referral(cot, fired) == {"exact": True, "recall": 1.0, "precision": 1.0}
    assert referral.cited_rules("Rule 5 applies. Rule 22: draw boxes first. Rule 5 again. Rules 99") == ["R5", "R22"]
    wrong = referral.rule_referral("Rule 5 applies because credits > 250.", ["R6", "R22"])
    assert wrong == {"exact": False, "recall": 0.0, "precision": 0.0}
    half = referral.rule_referral("Rule 6 applies; Rule 9 too.", ["R6", "R22"])
    assert half == {"exact": False, "recall": 0.5, "precision": 0.5}
    assert referral.summarize_rules([wrong, half]) == {"samples": 2, "rules_exact": 0.0, "rule_recall": 0.25,
                                                       "rule_precision": 0.25}


def test_judge_score_is_read_under_the_score_heading() -> None:
    assert referral.judge_score("fine.\n## Score ##\n8") == 8.0
    assert referral.judge_score("## Score ## **7.5**") == 7.5
    assert referral.judge_score("## Score ##\n42") == 10.0
    assert referral.judge_score("no score here") is None
    # a non-string reply or response (found by benchmarks/fuzz_scoring.py) reads as no text, not TypeError
    assert referral.judge_score(None) is None and referral.visited_conditions(1.5) == [] and referral.cited_rules({}) == []


def test_judge_score_is_linear_on_hostile_whitespace() -> None:
    """200,000 spaces after the heading: minutes with a backtracking pattern, milliseconds now. A
    hang guard with a 100x margin, not a performance figure."""
    import time

    started = time.monotonic()
    assert referral.judge_score("## Score ##" + " " * 200_000) is None
    assert referral.judge_score("## Score ##" + " " * 200_000 + "9") == 9.0
    assert time.monotonic() - started < HANG_GUARD_S


def test_judge_client_speaks_openai_chat_completions() -> None:
    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self._reply({"data": [{"id": "judge-model"}]})

        def do_POST(self) -> None:  # noqa: N802
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self._reply({"choices": [{"message": {"content": "All references hold.\n## Score ##\n9"}}]})

        def _reply(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        assert referral.judge_model_id(url) == "judge-model"
        assert referral.ask_judge(url, "judge-model", "Policy text", "Condition 1 checks ...") == 9.0
    finally:
        server.shutdown()
    prompt = seen[0]["messages"][0]["content"]
    assert seen[0]["model"] == "judge-model" and "## Policy ##\nPolicy text" in prompt and "## Model Response ##" in prompt


def test_eval_scores_exact_match_and_never_raise() -> None:
    reward = load_config(REPO / "configs/default.yaml").rl.reward
    good = score_eval("clevr_policy-T-N2", "<think>x</think> \\boxed{Case 2}", "Case 2", reward)
    assert good == {"accuracy": 1.0, "format": 1.0}
    for junk in ("", "\\boxed{", "\x00" * 10, "<think>" * 1000):
        assert score_eval("clevr_policy-T-N2", junk, "Case 2", reward)["accuracy"] == 0.0
    assert mean_scores([{"accuracy": 1.0}, {"accuracy": 0.0}]) == {"samples": 2, "accuracy": 50.0}


def test_gta_eval_splits_tool_and_argument_scores() -> None:
    reward = load_config(REPO / "configs/default.yaml").rl.reward
    gold = {"name": "CountGivenObject_v2", "arguments": {"image": "image/image_7.jpg", "text": "red ball"}}
    wrong_version = {**gold, "name": "CountGivenObject_v1"}

    def answer(call: dict) -> str:
        return "<think>look up the tool</think>\n\\boxed{" + json.dumps(call) + "}"

    exact = score_eval("gta_policy", answer(gold), json.dumps(gold), reward)
    assert exact["tool"] == exact["arg"] == exact["accuracy"] == 1.0
    other = score_eval("gta_policy", answer(wrong_version), json.dumps(gold), reward)
    assert other["tool"] == 0.0 and other["accuracy"] < 1.0
    assert score_eval("gta_policy", "no call at all", json.dumps(gold), reward) == \
        {"accuracy": 0.0, "format": 0.0, "tool": 0.0, "arg": 0.0}


def test_suites_build_the_right_prompts(clevr_dir: Path, tiny_model_dir: Path) -> None:
    rows = suite_rows(str(clevr_dir), ["policy_free", "in_context", "override", "forgetting", "referral"], 4, None)
    assert set(rows) == {"policy_free", "in_context", "override", "forgetting"}  # referral generates nothing itself
    assert all(len(samples) == 4 for samples in rows.values())
    built, skipped = build_requests(str(tiny_model_dir), rows, efficiency_samples=2, max_prompt_tokens=8000)
    requests = {r["request_id"]: r for r in built}
    assert not skipped and all(r["tokens"] > 0 for r in built)
    sample = rows["policy_free"][0]
    free, aware = requests[f"policy_free/{sample['sample_id']}"], requests[f"in_context/{sample['sample_id']}"]
    opening = sample["policy_text"][:40]
    assert opening not in free["prompt"] and opening in aware["prompt"]
    assert len(aware["images"]) == len(sample["policy_images"]) + len(sample["images"]) and len(free["images"]) == 1
    override = rows["override"][0]
    preamble = OVERRIDE_PREAMBLE.format(name=override["policy_name"])
    assert preamble in requests[f"override/{override['sample_id']}"]["prompt"]
    assert preamble not in aware["prompt"]
    prefill = [r for r in requests.values() if r["mode"] == "prefill"]
    assert len(prefill) == 2 and all(r["policy_prompt"] and r["prompt"] for r in prefill)
    assert spread(list(range(10)), 4) == [0, 2, 5, 7]


def test_eval_split_val_scores_the_validation_scenes_and_a_set_without_them_says_so(tmp_path: Path) -> None:
    from mpi_ray.data.clevr_policy.__main__ import main

    out = tmp_path / "data"
    assert main(["--depth", "2", "--variant", "T", "--out", str(out), "--policies", "2", "--train-per-policy", "4",
                 "--test", "4", "--val", "4", "--general", "2", "--image-size", "64", "--seed", "1"]) == 0
    val = suite_rows(str(out), ["policy_free", "in_context", "override"], None, None, policy_split="val")
    test = suite_rows(str(out), ["policy_free", "override"], None, None)
    assert {r["split"] for r in val["policy_free"] + val["in_context"]} == {"val"}
    assert {r["split"] for r in test["policy_free"]} == {"test"}
    assert val["override"] == test["override"]  # the override suite keeps its own split
    with pytest.raises(ValueError, match="no val split"):
        suite_rows(str(out.parent / "none"), ["policy_free"], None, None, policy_split="val")


def test_a_prompt_that_cannot_be_served_is_skipped_and_counted(clevr_dir: Path, tiny_model_dir: Path) -> None:
    """Issue 18: a 97,535-token policy or a 1x600 image used to reach vLLM, which refused the whole batch."""
    import io

    from PIL import Image

    rows = suite_rows(str(clevr_dir), ["policy_free", "in_context"], 3, None)
    long_policy, thin = dict(rows["in_context"][0]), dict(rows["policy_free"][1])
    long_policy["policy_text"] += " red cube" * 20_000
    buffer = io.BytesIO()
    Image.new("RGB", (1, 600)).save(buffer, format="PNG")
    thin["images"] = [buffer.getvalue()]
    rows["in_context"][0], rows["policy_free"][1] = long_policy, thin
    requests, skipped = build_requests(str(tiny_model_dir), rows, efficiency_samples=None, max_prompt_tokens=8000)
    assert set(skipped) == {f"in_context/{long_policy['sample_id']}", f"policy_free/{thin['sample_id']}"}
    assert "exceed max_seq_len 8000" in skipped[f"in_context/{long_policy['sample_id']}"]
    assert "aspect ratio" in skipped[f"policy_free/{thin['sample_id']}"]
    assert len(requests) == 4 and len(rows["in_context"]) == 2 and len(rows["policy_free"]) == 2


def test_eval_stage_plans_base_trained_and_final_checkpoints(tmp_path: Path) -> None:
    from mpi_ray.pipeline import StageContext
    from mpi_ray.run_dir import RunDir
    from mpi_ray.stages.eval import checkpoints, stage_label

    cfg = load_config(REPO / "configs/default.yaml", [f"run.dir={tmp_path}"])
    run = RunDir.create(cfg)
    for stage in ("model", "data", "cpt", "sft", "rl"):
        run.mark_done(stage, {"model": f"/m/{stage}"} if stage != "data" else {"data": "/d"}, 1.0)
    ctx = StageContext(cfg, run, outputs={"model": "/m/rl", "data": "/d"})
    plan = checkpoints(ctx)
    assert [(stage, path) for stage, path, _ in plan] == [("model", "/m/model"), ("sft", "/m/sft"), ("rl", "/m/rl")]
    assert plan[0][2] == ["in_context", "forgetting"] and plan[1][2] == ["policy_free", "override", "referral"]
    assert plan[2][2] == list(cfg.eval.suites)
    ran = {"cpt", "sft", "rl"}
    assert [stage_label(s, ran, ctx) for s, _, _ in plan] == ["In-Context (no MPI)", "VM-CPT + CoT SFT", "TriMPI w/ PoRo-GRPO"]
    assert stage_label("rl", {"sft", "rl"}, ctx) == "CoT SFT + PoRo-GRPO"


def test_the_constant_answer_floor_takes_each_kind_of_questions_most_common_answer() -> None:
    # yes/no: "no" 3 of 4; counts: "0" 2 of 3; cases: "Case 1" 2 of 3 -> (3 + 2 + 2) of 10
    answers = ["no", "no", "yes", "no", "0", "0", "2", "Case 1", "Case 1", "Case 0"]
    assert constant_answer_accuracy(answers) == pytest.approx(70.0)
    assert constant_answer_accuracy(["Case 0", "Case 1", "Case 2", "Case 3"]) == 25.0
    assert constant_answer_accuracy([]) is None


def test_report_has_the_stage_table_and_plots(tmp_path: Path) -> None:
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "metrics.jsonl").write_text("".join(json.dumps({"micro_step": i, "loss": 3.0 - i}) + "\n" for i in range(3)))
    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": i, "policy_free/reward": 0.1 * i, "policy_aware/reward": 0.2 * i, "policy_free/accuracy": 0.5,
                    "policy_aware/accuracy": 0.25 * i, "poro/free_unsolved": 0.5, "poro/rescued": 0.125}) + "\n"
        for i in range(1, 5)))
    suites = {"samples": 4, "accuracy": 25.0, "format": 50.0}
    results = {
        "run": "t", "dataset": "clevr_policy-M-N2", "final": "rl", "max_response_len": 64, "forgetting_benchmark": "general",
        "checkpoints": {
            "model": {"label": "In-Context (no MPI)", "suites": {"in_context": suites, "forgetting": suites}},
            "rl": {"label": "TriMPI w/ PoRo-GRPO", "suites": {"policy_free": {**suites, "accuracy": 75.0},
                                                              "override": suites, "forgetting": suites},
                   "constant_answer": {"policy_free": 25.0, "forgetting": 42.0},
                   "referral": {"programmatic": {"samples": 4, "path_exact": 0.5, "condition_recall": 0.75,
                                                 "condition_precision": 0.8, "branching_errors_by_depth": {"1": 2},
                                                 "decisions": {"1": {"reached": 4, "right": 3}, "1.1": {"reached": 3, "right": 2}}}},
                   "efficiency": {"samples": 2, "prompt_tokens_with_policy": 900, "prompt_tokens_without_policy": 100,
                                  "token_reduction_pct": 88.9, "ttft_with_policy_ms": 40.0, "ttft_without_policy_ms": 10.0,
                                  "prefill_reduction_pct": 75.0, "paper_token_reduction_pct": 93.9,
                                  "paper_prefill_reduction_pct": 85.7}},
        },
    }
    report = write_report(tmp_path, results).read_text()
    assert "| In-Context (no MPI) | 25.00 | - | - | 4 |" in report
    assert "| TriMPI w/ PoRo-GRPO | 75.00 | 25.00 | 50.00 | 4 |" in report
    assert "88.9%" in report and "up to 85.7%" in report and "before MPI (base model): 25.00" in report
    assert "(right / reached): 1 3/4 (75%), 1.1 2/3 (67%)" in report
    assert "One constant answer per kind of question scores 25.00 on these scenes" in report
    assert "(yes/no, a count, other) scores 42.00" in report
    assert "| early (step 1) | 0.50 | 0.25 |" in report and "| all 4 steps | 0.50 | 0.62 |" in report
    assert "early in RL: **does not hold** (0.25 vs 0.50, step 1)" in report
    assert "were all wrong: 50.0% a step" in report and "12.5% of all prompts" in report
    for plot in ("training_loss", "rl_rewards", "branching_errors"):
        assert (tmp_path / "plots" / f"{plot}.png").stat().st_size > 1000 and f"plots/{plot}.png" in report


def test_gta_report_scores_tool_argument_and_rule_referral(tmp_path: Path) -> None:
    suites = {"samples": 4, "accuracy": 50.0, "format": 100.0, "tool": 75.0, "arg": 25.0}
    results = {
        "run": "t", "dataset": "gta_policy", "final": "sft", "max_response_len": 64, "forgetting_benchmark": "general",
        "checkpoints": {"sft": {"label": "CoT SFT", "suites": {"policy_free": suites},
                                "referral": {"rules": {"samples": 4, "rules_exact": 0.25, "rule_recall": 0.5,
                                                       "rule_precision": 0.75}}}},
    }
    report = write_report(tmp_path, results).read_text()
    assert "| Method | Tool Acc | Arg Score | Overall | Override | Referral rules exact | Samples |" in report
    assert "| CoT SFT | 75.00 | 25.00 | 50.00 | - | 25.00 | 4 |" in report
    assert "cites exactly the rules that apply: 25.0% of 4 responses" in report


def test_checkpoints_of_one_architecture_share_one_engine_pass(tmp_path: Path) -> None:
    from mpi_ray.eval.inference import engine_passes

    def folder(name: str, hidden: int, dtype: str = "float32") -> str:
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"_name_or_path": name, "dtype": dtype, "hidden_size": hidden,
                                                      "text_config": {"dtype": dtype, "hidden_size": hidden}}))
        (path / "tokenizer.json").write_text("{}")
        return str(path)

    base, sft, rl = folder("base", 64), folder("sft", 64, "bfloat16"), folder("rl", 64)
    wider = folder("wider", 128)
    assert engine_passes([base, sft, wider, rl, "Qwen/Qwen2.5-VL-7B-Instruct"]) == [[0, 1, 3], [2], [4]]


def test_engines_rl_handed_on_take_a_pass_only_where_every_request_fits(tmp_path: Path) -> None:
    """Eval on RL's engines: the same architecture, and every request's prompt + eval's response and images
    within what the engines were started for; otherwise the pass gets its own pool."""
    from mpi_ray.eval.inference import _unfit
    from mpi_ray.rollout.engine import engine_key
    from mpi_ray.rollout.prestart import StartedEngines

    def folder(name: str, hidden: int) -> str:
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"hidden_size": hidden, "text_config": {"hidden_size": hidden}}))
        (path / "tokenizer.json").write_text("{}")
        return str(path)

    rl, other = folder("rl", 64), folder("other", 128)
    cfg = load_config(REPO / "configs" / "default.yaml", ["eval.max_response_len=256"])
    handed = StartedEngines(rl, engine_key(rl), engines=["engine"], max_model_len=1536, max_images=1)
    requests = [{"tokens": 466}, {"tokens": 99}]
    assert _unfit(cfg, handed, rl, requests, max_images=1) is None
    assert _unfit(cfg, handed, other, requests, max_images=1) == "another architecture or tokenizer"
    assert _unfit(cfg, handed, rl, [{"tokens": 1281}], max_images=1) == (
        "1281 prompt tokens + eval.max_response_len 256 exceed the engines' 1536")
    assert _unfit(cfg, handed, rl, requests, max_images=2) == "2 images in a request, the engines take 1"
    assert _unfit(cfg, StartedEngines(rl, engine_key(rl), engines=[]), rl, requests, max_images=1) == "none left"
