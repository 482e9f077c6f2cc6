"""The command line as a user meets it: one-line errors for bad input, shipped recipes parse,
pipelines skip finished stages and resume interrupted ones, init/synth/tokenizer commands."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmforge.pipeline_file import load_pipeline

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env_extra=None, cwd=None, timeout=300):
    env = {**os.environ, "LMFORGE_LOG_LEVEL": "WARNING", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def _one_line_error(res):
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("lmforge: error:")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    return lines[0]


BAD_SFT_ROWS = [
    ('{"conversations": "hello"}', r'"conversations" must be a list'),
    ('{"conversations": [{"role": "user", "content": "hi"}]}', "assistant"),
    (
        '{"conversations": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}',
        "role",
    ),
    ('{"conversations": [', "JSON"),
    ('{"foo": 1}', "conversations"),
]


GOOD_SFT_ROW = (
    '{"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}'
)


def _train_sft(data, run_dir, *extra, **kw):
    return cli(
        "train",
        "sft",
        "--dataset",
        data,
        "--from_weight",
        "none",
        "--preset",
        "tiny",
        "--output_dir",
        run_dir,
        *extra,
        **kw,
    )


@pytest.mark.parametrize("row,expected", BAD_SFT_ROWS)
def test_bad_sft_row_is_one_line_with_file_and_line(tmp_path, row, expected):
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join([GOOD_SFT_ROW, GOOD_SFT_ROW, row, GOOD_SFT_ROW]) + "\n", encoding="utf-8")
    line = _one_line_error(_train_sft(data, tmp_path / "run", "--max_steps", "1"))
    assert f"{data}:3:" in line and expected.lower() in line.lower(), line
    assert not (tmp_path / "run" / "lmforge_finished.json").exists()


def test_skip_bad_rows_counts_and_trains(tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join([GOOD_SFT_ROW] * 8 + ['{"conversations": "x"}']) + "\n", encoding="utf-8")
    res = _train_sft(
        data,
        tmp_path / "run",
        "--max_steps",
        "2",
        "--skip_bad_rows",
        "--per_device_train_batch_size",
        "2",
        env_extra={"LMFORGE_LOG_LEVEL": "INFO"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "skipped 1 bad rows" in res.stderr


def test_bad_pretrain_row_and_missing_file(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text('{"text": "ok"}\n{"text": 5}\n', encoding="utf-8")
    line = _one_line_error(
        cli(
            "train",
            "pretrain",
            "--dataset",
            data,
            "--preset",
            "tiny",
            "--output_dir",
            tmp_path / "r",
            "--max_steps",
            "1",
        )
    )
    assert f"{data}:2:" in line and '"text"' in line
    line = _one_line_error(cli("train", "pretrain", "--dataset", tmp_path / "nope.jsonl", "--preset", "tiny"))
    assert "nope.jsonl" in line


def test_unknown_flag_and_bad_value_are_one_line():
    assert "did you mean --learning_rate" in _one_line_error(cli("train", "sft", "--learning_rat", "1"))
    assert "--max_steps expects int" in _one_line_error(cli("train", "pretrain", "--max_steps", "many"))
    assert "unknown stage" in _one_line_error(cli("train", "pretrian"))


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_parses(recipe):
    from lmforge.cli import COMMANDS, find_command
    from lmforge.pipeline import resolve_train_config

    data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    if "stages" not in data:  # a flat config for `lmforge train STAGE recipe.yaml`
        resolve_train_config(data["stage"], [str(recipe)])
        return
    workdir, stages = load_pipeline(str(recipe))
    for st in stages:
        words, _ = find_command(st["command"].split())
        assert words in COMMANDS, st["command"]
        if words == ("train",):
            stage = st["command"].split()[1]
            argv = [f"--{k}={v}" for k, v in (st.get("args") or {}).items()]
            resolve_train_config(stage, argv)


def test_pipeline_resumes_after_kill_and_skips_finished(tmp_path):
    recipe = tmp_path / "p.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "workdir": str(tmp_path / "work"),
                "stages": [
                    {"name": "data", "command": "data synth", "args": {"scale": 0.05}},
                    {
                        "name": "pretrain",
                        "command": "train pretrain",
                        "args": {
                            "dataset": "{data}/pretrain.jsonl",
                            "preset": "tiny",
                            "max_steps": 6,
                            "save_steps": 2,
                            "max_length": 64,
                            "per_device_train_batch_size": 4,
                            "gradient_accumulation_steps": 1,
                            "learning_rate": 1e-3,
                        },
                    },
                ],
            }
        )
    )
    killed = cli("pipeline", recipe, env_extra={"LMFORGE_FAULT_KILL_AT_STEP": "5"})
    assert killed.returncode == -signal.SIGKILL
    pre = tmp_path / "work" / "pretrain"
    assert (pre / "checkpoint-4").is_dir() and not (pre / "lmforge_finished.json").exists()
    dry = cli("pipeline", recipe, "--dry_run")
    assert "data" in dry.stdout and "done" in dry.stdout and "resume" in dry.stdout
    again = cli("pipeline", recipe)
    assert again.returncode == 0, again.stderr[-2000:]
    steps = [json.loads(ln)["step"] for ln in (pre / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert (pre / "lmforge_finished.json").is_file()
    final = cli("pipeline", recipe, "--dry_run")
    assert final.stdout.count("done") == 2


def test_pipeline_stages_run_in_process_with_their_args_as_a_config_layer(tmp_path, monkeypatch, capsys):
    """Stages go through the Python API (no argv, no `cli.dispatch`): args keep their YAML types, a bad
    value names the stage, a command that cannot be a stage is refused before anything runs."""
    import lmforge.cli
    from lmforge.errors import LmforgeError
    from lmforge.pipeline_file import run_pipeline_file

    monkeypatch.setattr(lmforge.cli, "dispatch", None)  # a stage that went back through the CLI fails
    recipe = tmp_path / "p.yaml"
    stages = [
        {"name": "data", "command": "data synth", "args": {"scale": 0.01, "lang": "en"}},
        {"name": "tok", "command": "tokenizer train", "args": {"dataset": ["{data}/tokenizer_corpus.txt"], "vocab_size": 300}},
    ]  # fmt: skip
    recipe.write_text(yaml.safe_dump({"workdir": str(tmp_path / "w"), "stages": stages}))
    assert run_pipeline_file(str(recipe)) == 0
    assert (tmp_path / "w" / "data" / "pretrain.jsonl").is_file()
    assert json.loads((tmp_path / "w" / "tok" / "tokenizer.json").read_text())["model"]["vocab"]
    assert "tokenizer written to" in capsys.readouterr().out
    stages[0]["args"]["scale"] = "lots"
    recipe.write_text(yaml.safe_dump({"workdir": str(tmp_path / "w2"), "stages": stages}))
    with pytest.raises(LmforgeError, match=r"p.yaml: stage data.*scale"):
        run_pipeline_file(str(recipe))
    stages[0]["args"]["scale"] = 0.01
    stages.append({"name": "srv", "command": "serve", "args": {}})
    recipe.write_text(yaml.safe_dump({"workdir": str(tmp_path / "w3"), "stages": stages}))
    with pytest.raises(LmforgeError, match=r"stage 'srv': `serve` cannot be a stage"):
        run_pipeline_file(str(recipe))
    assert not (tmp_path / "w3").exists()


def test_tokenizer_train_and_init(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world, 你好世界\n" * 200 + "the quick brown fox\n" * 200, encoding="utf-8")
    res = cli(
        "tokenizer", "train", "--dataset", corpus, "--output_dir", tmp_path / "tok", "--vocab_size", "400"
    )
    assert res.returncode == 0, res.stderr
    res = cli(
        "init",
        "--tokenizer_path",
        tmp_path / "tok",
        "--hidden_size",
        "64",
        "--num_hidden_layers",
        "1",
        "--num_attention_heads",
        "2",
        "--num_key_value_heads",
        "1",
        "--output_dir",
        tmp_path / "m",
    )
    assert res.returncode == 0, res.stderr
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert tok.convert_tokens_to_ids("<|im_end|>") == 2 and model.config.hidden_size == 64
    assert model.config.vocab_size >= len(tok)


def test_data_check_reports(tmp_path, synth_dir):
    res = cli("data", "check", "--dataset", synth_dir / "sft.jsonl", "--stage", "sft")
    assert res.returncode == 0, res.stderr
    assert "minimind" in res.stdout.lower()


def test_data_convert_cache_is_reused_by_train(tmp_path, synth_dir):
    cache = tmp_path / "cache"
    res = cli(
        "data",
        "convert",
        "sft",
        "--dataset",
        synth_dir / "sft.jsonl",
        "--tokenized_path",
        cache,
        "--max_length",
        "128",
        "--from_weight",
        "none",
    )
    assert res.returncode == 0, res.stderr
    assert (cache / "lmforge_cache.json").is_file()
    stamp = (cache / "lmforge_cache.json").stat().st_mtime_ns
    res = cli(
        "train",
        "sft",
        "--dataset",
        synth_dir / "sft.jsonl",
        "--tokenized_path",
        cache,
        "--max_length",
        "128",
        "--from_weight",
        "none",
        "--preset",
        "tiny",
        "--max_steps",
        "1",
        "--output_dir",
        tmp_path / "r",
    )
    assert res.returncode == 0, res.stderr
    assert (cache / "lmforge_cache.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
