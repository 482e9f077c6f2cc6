"""bench/pretrain.py end to end at a tiny size: both modes run in their own subprocess and report
throughput and padding figures, and packing wastes less than padding every row (no timing asserts)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "pretrain.py"
TINY = [
    "--steps",
    "4",
    "--seq_len",
    "64",
    "--batch_size",
    "4",
    "--hidden_size",
    "64",
    "--num_hidden_layers",
    "1",
    "--num_attention_heads",
    "2",
    "--num_key_value_heads",
    "1",
]


def run_bench(script: Path, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    """Run a bench script in a subprocess; it must succeed and print exactly ONE JSON line: that
    report, and the finished process (its stderr holds the table)."""
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0]), proc


def test_bench_pretrain_reports_both_modes(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), *TINY, "--json", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["mode"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"lmforge", "reference"}
    for mode, r in results.items():
        assert r["steps"] == 4, mode
        assert r["all_tokens_per_s"] > 0 and r["loss_tokens_per_s"] > 0, mode
        assert r["loss_tokens_per_s"] < r["all_tokens_per_s"], mode
        assert 0 < r["waste"] < 1, mode
        assert 0 <= r["data_padding_waste"] < 1, mode
        assert r["peak_rss_mb"] > 0, mode
        assert r["final_loss"] > 0, mode
    assert results["lmforge"]["waste"] < results["reference"]["waste"]
    assert results["lmforge"]["data_padding_waste"] < results["reference"]["data_padding_waste"]
    # the printed table names both modes
    assert "lmforge" in proc.stdout and "reference" in proc.stdout and "loss tok/s" in proc.stdout


SERVER_BENCH = Path(__file__).resolve().parents[1] / "bench" / "server.py"


def test_bench_server_reports_batched_and_sequential():
    """bench/server.py --quick: both servers answer every request; one JSON line (no timing asserts)."""
    report, _ = run_bench(SERVER_BENCH, "--quick")
    for mode, size in (("batched", 4), ("sequential", 1)):
        r = report[mode]
        assert r["max_batch_size"] == size and r["requests"] == 8, mode
        assert r["tokens"] == 8 * 8, mode  # ignore_eos: every request generates max_tokens
        assert r["requests_per_s"] > 0 and r["tokens_per_s"] > 0, mode
    assert report["sequential"]["peak_batch"] == 1
    assert report["batched"]["peak_batch"] > 1  # concurrent requests were decoded together
    # the speedups are the ratios of the two modes' figures (as rounded in the report), not timings
    b, s = report["batched"], report["sequential"]
    assert report["speedup_tokens_per_s"] == round(b["tokens_per_s"] / s["tokens_per_s"], 2)
    assert report["speedup_requests_per_s"] == round(b["requests_per_s"] / s["requests_per_s"], 2)


SFT_BENCH = Path(__file__).resolve().parents[1] / "bench" / "sft.py"


def test_bench_sft_reports_lmforge_trl_and_hf_trainer():
    """bench/sft.py --quick: lmforge, TRL SFTTrainer (padding-free, fused LM head) and a plain
    Trainer train the same steps; one JSON line with the figures (no timing asserts)."""
    report, _ = run_bench(SFT_BENCH, "--quick", "--steps", "4", "--threads", "1")
    for mode in ("lmforge", "trl", "hf"):
        r = report[mode]
        assert r["steps"] == 4 and len(r["step_tokens"]) == 4, mode
        assert 0 < r["tokens_per_s"] < r["positions_per_s"], mode  # assistant tokens only carry loss
        assert 0 < r["waste"] < 1 and r["peak_rss_mb"] > 0, mode
        # waste is the share of positions without a loss token: timing-free, the span cancels
        assert r["waste"] == pytest.approx(1 - r["tokens_per_s"] / r["positions_per_s"], rel=1e-9), mode
        assert r["last_loss"] < r["first_loss"], mode  # all really trained
    lm, trl, hf = report["lmforge"], report["trl"], report["hf"]
    # same rows, same tokenisation, same seeded order: every step trains the same assistant tokens,
    # from the same model, so the first step's loss agrees too
    assert lm["step_tokens"] == trl["step_tokens"] == hf["step_tokens"]
    assert trl["first_loss"] == pytest.approx(lm["first_loss"], rel=1e-4)
    assert hf["first_loss"] == pytest.approx(lm["first_loss"], rel=1e-4)
    # lmforge and TRL are both padding-free (TRL: one row; lmforge: rows of <= max_length, which may
    # carry a little padding), so both waste fewer positions than the padded batches
    assert lm["waste"] < hf["waste"] and trl["waste"] < hf["waste"]
    # TRL SFTTrainer is the baseline; the plain Trainer is reported next to it
    assert report["baseline"] == "trl" and report["baseline_vs_hf"] == "hf"
    assert report["goal"].startswith("lmforge >= 1.5x") and report["goal"].endswith(("met", "not met"))
    for suffix, ref in (("", trl), ("_vs_hf", hf)):
        mem = report["memory_measure" + suffix]
        assert mem in lm and mem in ref
        assert report["memory_ratio" + suffix] == pytest.approx(lm[mem] / ref[mem], rel=1e-9)
        speedup = report["speedup_tokens_per_s" + suffix]
        assert speedup == pytest.approx(lm["tokens_per_s"] / ref["tokens_per_s"], rel=1e-9)
        assert report["peak_rss_ratio" + suffix] == pytest.approx(
            lm["peak_rss_mb"] / ref["peak_rss_mb"], rel=1e-9
        )


DPO_BENCH = Path(__file__).resolve().parents[1] / "bench" / "dpo.py"


def test_bench_dpo_reports_lmforge_and_trl(tmp_path):
    """bench/dpo.py --quick: lmforge's DPO (plain and with precomputed reference log-probs) and plain
    TRL DPOTrainer train the same pairs; one JSON line with the figures (no timing asserts). Eight
    pairs seen again and again, so that five steps of 4 surely lower the loss whatever the pairs."""
    from lmforge.data.synth import synth

    rows = Path(synth(str(tmp_path / "synth"), scale=0.01)["dpo"]).read_text().splitlines()[:8]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(rows * 8) + "\n")
    report, _ = run_bench(DPO_BENCH, "--quick", "--threads", "1", "--data", str(data))
    for mode in ("lmforge", "lmforge_precompute", "trl"):
        r = report[mode]
        assert r["steps"] == 5, mode
        assert (
            0 < r["pairs_per_s"] < r["completion_tokens_per_s"] < r["tokens_per_s"] <= r["positions_per_s"]
        ), mode
        assert r["s_per_step"] > 0 and r["peak_rss_mb"] > 0 and r["train_mem_mb"] >= 0, mode
        assert abs(r["first_loss"] - 0.6931) < 1e-3, mode  # step 1: the policy is the reference
        assert r["last_loss"] < r["first_loss"], mode  # every mode really trained
        assert r["waste"] == pytest.approx(1 - r["tokens_per_s"] / r["positions_per_s"], rel=1e-9), mode
    # the same pairs in every mode: the padding each collator adds is the same share of positions
    # with and without precomputed reference log-probs
    assert report["lmforge"]["waste"] == pytest.approx(report["lmforge_precompute"]["waste"], abs=1e-9)
    trl = report["trl"]
    for mode, suffix in (("lmforge", ""), ("lmforge_precompute", "_precompute")):
        r = report[mode]
        assert report[f"speedup_pairs_per_s{suffix}"] == pytest.approx(r["pairs_per_s"] / trl["pairs_per_s"])
        assert report[f"peak_rss_ratio{suffix}"] == pytest.approx(r["peak_rss_mb"] / trl["peak_rss_mb"])
    assert report["machine"]["usable_cores"] >= 1 and report["command"] and report["date"]


INFERENCE_BENCH = Path(__file__).resolve().parents[1] / "bench" / "inference.py"


def test_bench_inference_same_tokens_as_plain_generate():
    """bench/inference.py --quick: lmforge's engine (batch 1 and batched) and plain model.generate
    (one at a time and left-padded batches) answer the same prompts greedily with identical tokens."""
    report, _ = run_bench(INFERENCE_BENCH, "--quick", "--threads", "1")
    for mode, size in (("lmforge_b1", 1), ("lmforge_batched", 4), ("hf_sequential", 1), ("hf_batched", 4)):
        r = report[mode]
        assert r["batch_size"] == size and r["prompts"] == 8, mode
        assert 0 < r["new_tokens"] <= 8 * 8, mode
        assert r["new_tokens_per_s"] > 0 and r["prompts_per_s"] > 0 and r["ttft_s"] > 0, mode
        assert r["peak_rss_mb"] > 0, mode
    assert report["same_tokens"] is True
    assert report["lmforge_batched"]["differ_from_hf_sequential"] == 0
    assert report["lmforge_b1"]["differ_from_hf_sequential"] == 0
    # every mode generated the same tokens, so the same count; speedups are ratios of the figures
    assert len({report[m]["new_tokens"] for m in ("lmforge_b1", "lmforge_batched", "hf_sequential")}) == 1
    for a, b in (("lmforge_batched", "hf_sequential"), ("lmforge_b1", "hf_sequential")):
        expected = report[a]["new_tokens_per_s"] / report[b]["new_tokens_per_s"]
        assert report[f"speedup_{a}_vs_{b}"] == pytest.approx(expected), (a, b)


TTL_BENCH = Path(__file__).resolve().parents[1] / "bench" / "time_to_loss.py"


def test_bench_time_to_loss_reports_time_to_target():
    """bench/time_to_loss.py --quick: the reference trains, its target is the mean of its last 10
    losses, both modes report when their 10-step moving average first reached it (or an explicit
    not-reached), and the ratios are those of the reported figures (no timing asserts)."""
    report, proc = run_bench(
        TTL_BENCH, "--quick", "--lmforge_flags", "--weight_decay 0.0", "--lmforge_lr", "default"
    )
    window, target = report["window"], report["target"]
    assert window == 10
    ref, lm = report["reference"], report["lmforge"]
    assert ref["steps"] == len(ref["losses"]) == 20  # --quick: 20 reference steps
    assert target == pytest.approx(sum(ref["losses"][-window:]) / window, rel=1e-12)
    assert lm["target"] == target
    assert lm["argv"][-2:] == ["--weight_decay", "0.0"]  # --lmforge_flags reached lmforge
    # --lmforge_lr default: no rate passed, so from-scratch pretraining's own default trained
    assert "--learning_rate" not in lm["argv"] and report["lmforge_lr"] == "default"
    assert (lm["optim"], lm["learning_rate"]) == ("muon", 8e-3)
    for mode, r in (("reference", ref), ("lmforge", lm)):
        losses, times = r["losses"], r["times"]
        assert len(losses) == len(times) == r["steps"], mode
        assert times == sorted(times) and times[0] > 0, mode
        avgs = [sum(losses[i - window : i]) / window for i in range(window, len(losses) + 1)]
        reached = [i for i, a in zip(range(window, len(losses) + 1), avgs) if a <= target + 1e-12]
        if reached:
            assert r["reached"] and r["steps_to_target"] == reached[0], mode
            assert r["time_to_target_s"] == times[reached[0] - 1], mode
        else:
            assert not r["reached"] and r["time_to_target_s"] is None, mode
            assert r["best_smoothed_loss"] == pytest.approx(min(avgs), rel=1e-12), mode
        assert r["loss_tokens_per_s"] > 0 and r["peak_rss_mb"] > 0 and r["setup_s"] > 0, mode
    assert ref["reached"]  # its own last window averages exactly the target
    if lm["reached"]:
        assert report["sooner"] == pytest.approx(ref["time_to_target_s"] / lm["time_to_target_s"], rel=1e-9)
        assert lm["stopped_by"] in ("target", "max_steps") and "sooner" in proc.stderr  # cap: 40
    else:
        assert report["sooner"] is None and "did NOT reach" in proc.stderr
    assert report["peak_rss_ratio"] == pytest.approx(lm["peak_rss_mb"] / ref["peak_rss_mb"], rel=1e-9)
    assert report["machine"]["usable_cores"] >= 1 and report["command"] and report["date"]


GPU_BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.sh"


def test_bench_gpu_dry_run_reports_every_configuration():
    """bench/gpu.sh --dry_run: every configuration of the GPU bench runs on the CPU with a tiny model
    (or says why it is skipped); its JSON lines parse, MFU is (6 N + 12 L d T) x tok/s / PEAK_FLOPS
    with N counted here from the real model and PEAK_FLOPS from the environment, and the table
    names every configuration. A failing configuration is recorded with its error, not raised."""
    import os

    import torch

    from lmforge.models.scratch import init_model
    from lmforge.models.tokenizer import load_tokenizer

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "PEAK_FLOPS": "1e12"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run(
        ["bash", str(GPU_BENCH), "--dry_run"], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[r["name"]] = r
    levers = ("base", "compile", "liger", "compile+liger", "reference")
    names = [f"{model} {lever}" for model in ("26M", "104M") for lever in levers]
    assert sorted(results) == sorted(names)
    table = proc.stdout[proc.stdout.index("config") :]
    tokenizer = load_tokenizer()
    for name in names:
        r = results[name]
        assert r["dry_run"] is True and r["peak_flops"] == 1e12, name
        assert name in table, name
        if r["lever"] in ("base", "reference"):  # these always run on a CPU
            assert r["status"] == "ok", (name, r["reason"])
        if r["status"] != "ok":
            assert r["status"] in ("skipped", "failed") and r["reason"], name
            assert f"{name}: {r['status']}: {r['reason']}" in table
            continue
        assert r["loss_tokens_per_s"] > 0 and r["all_tokens_per_s"] >= r["loss_tokens_per_s"], name
        # N: every parameter that does a matmul per token (the tied LM head, not the embedding lookup)
        with torch.device("meta"):
            model = init_model(tokenizer, hidden_size=64, num_hidden_layers=1 + (r["model"] == "104M"),
                               num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
        n = sum(p.numel() for k, p in model.named_parameters() if "embed_tokens" not in k)
        n += model.lm_head.weight.numel() * model.config.tie_word_embeddings
        assert r["n_params"] == n, name
        c = model.config
        assert r["flops_per_token"] == 6 * n + 12 * c.num_hidden_layers * c.hidden_size * r["seq_len"], name
        assert r["mfu"] == pytest.approx(r["flops_per_token"] * r["loss_tokens_per_s"] / 1e12), name
        assert r["mfu_all_positions"] == pytest.approx(r["flops_per_token"] * r["all_tokens_per_s"] / 1e12)
        assert f"{100 * r['mfu']:.3g}" in table.split(name)[1].splitlines()[0], name
    # the levers reached lmforge: compile ran in the dry run with its flag
    assert "--torch_compile true" in results["26M compile"]["lmforge_flags"]
    assert results["26M compile"]["status"] == "ok", results["26M compile"]["reason"]

    # a configuration that fails is recorded as failed with its last error line
    sys.path.insert(0, str(root / "bench"))
    try:
        import gpu
    finally:
        sys.path.remove(str(root / "bench"))
    cfg = {"mode": "lmforge", "preset": None, "sizes": {}, "batch_size": 2, "steps": 3, "seq_len": 32}
    cfg["lmforge_flags"] = "--no_such_flag 1"
    failed = gpu.run_one(cfg, "unused.jsonl", 120, 1e12, {"flops_per_token": 1})
    assert failed["status"] == "failed" and "no_such_flag" in failed["reason"], failed
