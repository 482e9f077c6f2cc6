"""MiniMind's commands as written (reference seed_001): every flag of every section is accepted and
lands on an lmforge key, and every example command of the reference runs, translated only as
`python trainer/train_X.py ARGS` → `lmforge train X ARGS`, `eval_llm.py` → `lmforge chat`,
`generate_*_from_api.py` → `lmforge generate distill|qa`, plus tiny sizes and step caps."""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.config.aliases import UNAVAILABLE
from lmforge.config.loader import canonical_key, resolve
from lmforge.errors import LmforgeError
from lmforge.pipeline import resolve_train_config

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"

# reference section → the lmforge command its script is
SECTION_COMMAND = {
    1: ("train", "pretrain"),
    2: ("train", "full_sft"),
    3: ("train", "lora"),
    4: ("train", "dpo"),
    5: ("train", "distill_reason"),
    6: ("train", "distillation"),
    7: ("train", "ppo"),
    8: ("train", "grpo"),
    9: ("train", "spo"),
    10: ("train", "distill_api"),
    11: ("generate", "distill"),
    12: ("generate", "qa"),
    13: ("chat",),
}
SCRIPT_COMMAND = {
    "generate_distill_data_from_api.py": ["generate", "distill"],
    "generate_qa_pairs_from_api.py": ["generate", "qa"],
    "eval_llm.py": ["chat"],
}
SAMPLE = {"str": "x", "int": "1", "float": "0.5"}


def _reference() -> str:
    files = sorted(REFERENCE.glob("seed_001_*.md"))
    if not files:
        pytest.skip("shared/reference is not beside this checkout", allow_module_level=True)
    return files[0].read_text(encoding="utf-8", errors="replace")


def _sections(text: str) -> dict[int, str]:
    parts = re.split(r"^## (\d+)\. ", text, flags=re.M)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _table_argv(body: str) -> list[str]:
    """`--flag value` for every row of a section's flag table (the reference default as value)."""
    argv = []
    for flag, typ, default in re.findall(r"^\| `--([a-z_]+)` \| (\w+) \| ([^|]*)\|", body, flags=re.M):
        argv.append(f"--{flag}")
        if typ == "flag":
            continue
        value = default.strip().strip("`")
        if flag == "reasoning_effort":
            value = "high"
        elif value.startswith("cuda"):
            value = "cpu"
        elif not value or value in ("-", "None") or "*" in value:
            value = SAMPLE[typ]
        argv.append(value)
    return argv


def _resolve(command: tuple[str, ...], argv: list[str]):
    if command[0] == "train":
        return resolve_train_config(command[1], argv)[1]
    from lmforge.infer.args import GenerationArgs

    if command[0] == "chat":
        from lmforge.infer.chat import ChatArgs

        return resolve([ChatArgs, GenerationArgs], argv, max_positionals=0)
    from lmforge.teacher.args import QA_DEFAULTS, DistillArgs, GenerateArgs, QAArgs, TeacherArgs

    own = DistillArgs if command[1] == "distill" else QAArgs
    return resolve([own, GenerateArgs, TeacherArgs], argv, defaults=QA_DEFAULTS, max_positionals=0)


@pytest.mark.parametrize("section", sorted(SECTION_COMMAND))
def test_every_flag_of_every_section_is_accepted(section):
    body = _sections(_reference())[section]
    argv = _table_argv(body)
    assert len(argv) >= 20, f"section {section}: flag table not found"
    cfg = _resolve(SECTION_COMMAND[section], argv)
    for tok in argv:
        if tok.startswith("--"):
            key, _ = canonical_key(tok[2:], cfg.specs)
            assert key in cfg.explicit or key in UNAVAILABLE, f"section {section}: {tok} did not land"


# --- every example command ----------------------------------------------------------------------
DATA = {  # the reference's data files → the bundled synthetic corpora of the same kind
    "pretrain_hq.jsonl": "pretrain.jsonl",
    "sft_mini_512.jsonl": "sft.jsonl",
    "sft_1024.jsonl": "sft.jsonl",
    "sft_2048.jsonl": "sft.jsonl",
    "lora_identity.jsonl": "lora_identity.jsonl",
    "lora_medical.jsonl": "lora_identity.jsonl",
    "lora_custom.jsonl": "lora_identity.jsonl",
    "dpo.jsonl": "dpo.jsonl",
    "r1_mix_1024.jsonl": "reasoning.jsonl",
    "distill_opus45_reasoning.jsonl": "reasoning.jsonl",
    "rlaif-mini.jsonl": "rlaif.jsonl",
}
# tiny sizes and caps: flag → new value from the old one
TINY_HIDDEN = {"512": "64", "768": "96", "640": "80"}
SHRINK = {
    "hidden_size": lambda v: TINY_HIDDEN[v],
    "student_hidden_size": lambda v: TINY_HIDDEN[v],
    "teacher_hidden_size": lambda v: TINY_HIDDEN[v],
    "num_hidden_layers": lambda v: str(int(v) // 8),
    "student_num_layers": lambda v: str(int(v) // 8),
    "teacher_num_layers": lambda v: str(int(v) // 8),
    "batch_size": lambda v: str(min(int(v), 2)),
    "accumulation_steps": lambda v: "1",
    "max_seq_len": lambda v: str(min(int(v), 64)),
    "max_gen_len": lambda v: "8",
    "max_new_tokens": lambda v: "8",
    "num_samples": lambda v: "2",
    "max_samples": lambda v: "2",
    "rate_limit_delay": lambda v: "0",
}
TRAIN_CAPS = ["--max_steps", "1", "--max_samples", "8", "--device", "cpu", "--preset", "tiny"]
OFFLINE = ["--base_url", "http://127.0.0.1:9", "--max_retries", "0"]  # no network in tests
# the one-line reasons of the examples that cannot finish here, by (command, save name or index)
NO_REWARD_MODEL = r"--reward_model_path ../internlm2-1_8b-reward: not a model folder"
NO_TEACHER = r"(teacher|connect|127\.0\.0\.1:9)"
EXPECTED = {
    "ppo": NO_REWARD_MODEL,
    "grpo": NO_REWARD_MODEL,
    "spo": NO_REWARD_MODEL,
    "distill_api": NO_TEACHER,
    "generate": r"rows failed",
    "wandb": r"wandb",
    "chat reason": r"several MiniMind weight folders match \(out/reason_64, out/reason_96\)",
}
ORDER = ["pretrain", "full_sft", "dpo", "distill_reason", "lora", "distillation", "ppo", "grpo", "spo"]


def _examples(text: str) -> list[list[str]]:
    """Every example command of the reference, as argv words after `python` / `torchrun ...`."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith(("python ", "torchrun ")):
                commands.append(shlex.split(line))
    return commands


def _translate(words: list[str]) -> tuple[list[str], dict[str, str]]:
    """(lmforge argv, launch environment) of one reference command line."""
    env = {}
    if words[0] == "torchrun":
        env["NPROC_PER_NODE"] = words[2]
        words = ["python", *words[3:]]
    script, args = Path(words[1]).name, words[2:]
    if script.startswith("train_"):
        head = ["train", script[len("train_") : -len(".py")]]
    else:
        head = SCRIPT_COMMAND[script]
    out = []
    for i, tok in enumerate(args):
        prev = args[i - 1][2:] if i and args[i - 1].startswith("--") else None
        if prev in SHRINK and not tok.startswith("--"):
            tok = SHRINK[prev](tok)
        out.append(tok)
    if head[0] == "train":
        if "--hidden_size" not in out and "--student_hidden_size" not in out:
            out += ["--hidden_size", "64", "--num_hidden_layers", "1"]
        out += TRAIN_CAPS
        if head[1] == "distill_api":
            out += OFFLINE
    elif head[0] == "generate":
        out += [*OFFLINE, "--concurrency", "1"]
        if head[1] == "distill" and "--max_samples" not in out:
            out += ["--max_samples", "2"]
    else:
        out += ["--device", "cpu", "--max_new_tokens", "8"]
    return head + out, env


def _expected(argv: list[str]) -> str | None:
    """None: exit 0; else the regex of the one line the command stops with."""
    if argv[0] == "generate":
        return EXPECTED["generate"]
    if argv[0] == "chat":
        weight = argv[argv.index("--weight") + 1] if "--weight" in argv else None
        return EXPECTED["chat reason"] if weight == "reason" and "--hidden_size" not in argv else None
    if "--use_wandb" in argv:
        return EXPECTED["wandb"]
    return EXPECTED.get(argv[1])


def _table() -> list[tuple[list[str], dict[str, str]]]:
    text = _reference()
    flow = text.split("## 📊")[0]
    main_part = [_translate(w) for w in _examples(flow)]
    rank = {name: i for i, name in enumerate(ORDER)}
    main_part.sort(key=lambda c: rank.get(c[0][1], len(ORDER)) if c[0][0] == "train" else len(ORDER) + 1)
    full_flow = [_translate(w) for w in _examples(text.split("## 📊")[1])]
    return main_part + full_flow


try:
    TABLE = _table()
except BaseException:  # no reference beside this checkout: the test below skips
    TABLE = []


def test_every_example_is_in_the_table():
    if not TABLE:
        _reference()
    assert len(TABLE) >= 45  # 46 example command lines in seed_001 (a few blocks hold several)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, synth_dir):
    """A MiniMind checkout's layout: ./dataset/NAME.jsonl, weights under ./out."""
    root = tmp_path_factory.mktemp("minimind")
    (root / "dataset").mkdir()
    for theirs, ours in DATA.items():
        (root / "dataset" / theirs).symlink_to(synth_dir / ours)
    return root


@pytest.mark.parametrize("argv,env", TABLE, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(TABLE)])
def test_reference_example_runs(argv, env, workdir, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(workdir)
    monkeypatch.setattr("sys.stdin", io.StringIO("你好\n"))
    for key in ("NPROC_PER_NODE", "NNODES"):
        monkeypatch.delenv(key, raising=False)  # the DDP example's launch: tests/test_distributed.py
    if "./MiniMind2" in argv and not (workdir / "MiniMind2").exists():  # a downloaded HF model
        (workdir / "MiniMind2").symlink_to(workdir / "out" / "full_sft_64")
    code = _main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    want = _expected(argv)
    if want is None:
        assert code == 0, err[-2000:]
        return
    assert code in (1, 2), err[-2000:]
    last = [ln for ln in err.splitlines() if ln.startswith("lmforge:")][-1]
    assert re.search(want, last), last


def _main(argv: list[str]) -> int:
    """`lmforge ARGV` in this process, its log lines going to this test's (captured) stderr."""
    import logging
    import sys

    for handler in logging.getLogger("lmforge").handlers:
        if getattr(handler, "_lmforge", False):
            handler.stream = sys.stderr  # not setStream: it flushes the previous test's closed stream
    return main(argv)


# --- what the table's runs left behind -----------------------------------------------------------
NEEDED = ("pretrain_64", "pretrain_96", "full_sft_64", "full_dist_64", "dpo_64")


def _after_table(workdir: Path, monkeypatch) -> None:
    """The table's runs are there (they are when the table ran first; alone, e.g. with -k, this runs it)."""
    _reference()
    monkeypatch.chdir(workdir)
    if all((workdir / "out" / name).is_dir() for name in NEEDED):
        return
    for argv, _ in TABLE:
        if argv[0] == "train":
            _main(argv)


def test_stages_chain_with_minimind_names(workdir, monkeypatch):
    _after_table(workdir, monkeypatch)
    out = workdir / "out"
    for name in ("pretrain_64", "pretrain_96", "pretrain_80_moe", "full_sft_64", "full_sft_96", "dpo_64"):
        assert (out / name / "config.json").is_file(), name
    assert (out / "reason_64" / "config.json").is_file() and (out / "full_dist_64" / "config.json").is_file()
    assert (out / "lora" / "lora_identity_64" / "adapter_config.json").is_file()
    args = (out / "full_sft_64" / "lmforge_args.yaml").read_text(encoding="utf-8")
    assert re.search(r"model_name_or_path: \S*out/pretrain_64", args)  # sft started from pretrain


def test_minimind_style_defaults():
    _, cfg = resolve_train_config("pretrain", ["--data_path", "d.jsonl"])
    assert cfg["save_weight"] == "pretrain"
    _, cfg = resolve_train_config("pretrain", ["--data_path", "d.jsonl", "--output_dir", "o"])
    assert cfg["save_weight"] is None  # not MiniMind-style: lmforge's own run folder
    _, cfg = resolve_train_config("grpo", ["--batch_size", "2", "--num_generations", "8", "--data_path", "p"])
    assert cfg["per_device_train_batch_size"] == 16 and cfg["reasoning"] is True
    assert cfg["save_weight"] == "grpo"
    _, cfg = resolve_train_config("grpo", ["--per_device_train_batch_size", "16", "--dataset", "p"])
    assert cfg["per_device_train_batch_size"] == 16 and cfg["reasoning"] is False
    _, cfg = resolve_train_config("lora", ["--data_path", "d.jsonl"])
    assert cfg["stage"] == "sft" and cfg["lora_name"] == "lora_identity" and cfg["tuner"] == "lora"
    assert (cfg["num_train_epochs"], cfg["per_device_train_batch_size"], cfg["logging_steps"]) == (50, 32, 10)
    assert cfg["model_name_or_path"] == "full_sft" and cfg["learning_rate"] == 1e-4
    _, cfg = resolve_train_config("distillation", ["--data_path", "d.jsonl"])
    assert cfg["stage"] == "distill" and cfg["save_weight"] == "full_dist"


def test_resume_finds_the_named_run(workdir, monkeypatch, caplog, one_thread):
    monkeypatch.chdir(workdir)
    base = ["--data_path", "./dataset/pretrain_hq.jsonl", "--hidden_size", "64", "--num_hidden_layers", "1"]
    base += ["--save_weight", "resumed", "--batch_size", "2", "--max_seq_len", "32", "--device", "cpu"]
    base += ["--preset", "tiny", "--accumulation_steps", "1", "--save_interval", "1"]
    assert _main(["train", "pretrain", *base, "--max_steps", "1"]) == 0
    caplog.set_level("INFO", logger="lmforge")
    assert _main(["train", "pretrain", *base, "--max_steps", "2", "--from_resume", "1"]) == 0
    assert "resuming out/resumed_64/checkpoint-1" in caplog.text


def test_size_flags_must_match_the_loaded_model(workdir, monkeypatch):
    _after_table(workdir, monkeypatch)
    argv = ["--from_weight", "pretrain", "--hidden_size", "64", "--save_weight", "mismatch"]
    with pytest.raises(
        LmforgeError, match=r"--num_hidden_layers 8: the model loaded from \S+ has num_hidden"
    ):
        from lmforge.pipeline import run_train

        run_train("sft", [*argv, "--num_hidden_layers", "8", "--max_steps", "1", "--device", "cpu"])
    assert not (workdir / "out" / "mismatch_64").exists()


def test_weight_names_resolve_without_hidden_size(workdir, tmp_path, monkeypatch):
    _after_table(workdir, monkeypatch)
    from lmforge.models.locate import resolve_model_path

    out = workdir / "out"
    assert resolve_model_path("full_dist", save_dir=str(out)) == str(out / "full_dist_64")
    with pytest.raises(
        LmforgeError, match=r"several MiniMind weight folders match .*pretrain_64.*pretrain_96"
    ):
        resolve_model_path("pretrain", save_dir=str(out))
    assert resolve_model_path("pretrain", save_dir=str(out), hidden_size=96) == str(out / "pretrain_96")
    (tmp_path / "full_sft_512.pth").write_bytes(b"")
    cmd = f"lmforge import minimind {tmp_path}/full_sft_512.pth --output_dir {tmp_path}/full_sft_512"
    with pytest.raises(LmforgeError, match=re.escape(cmd)):
        resolve_model_path("full_sft", save_dir=str(tmp_path), hidden_size=512)
    with pytest.raises(LmforgeError, match=re.escape(cmd)):
        resolve_model_path("full_sft", save_dir=str(tmp_path))


def test_rl_refuses_when_no_reward_can_be_nonzero(workdir, monkeypatch, tmp_path):
    from lmforge.pipeline import run_train

    _after_table(workdir, monkeypatch)
    rows = tmp_path / "no_gt.jsonl"
    rows.write_text(  # MiniMind RLAIF rows without `gt`
        '{"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "无"}]}\n' * 4
    )
    argv = ["--data_path", str(rows), "--from_weight", "full_sft", "--hidden_size", "64", "--device", "cpu"]
    argv += ["--output_dir", str(tmp_path / "run"), "--max_steps", "1"]
    with pytest.raises(LmforgeError, match=r"no reward can be non-zero: accuracy compare answers"):
        run_train("grpo", argv)
    assert not (tmp_path / "run").exists()


def test_chat_the_eval_llm_way(workdir, monkeypatch, capsys):
    from lmforge.config.minimind import chat_defaults
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.chat import ChatArgs

    cfg = resolve([ChatArgs, GenerationArgs], ["--weight", "x"], defaults=chat_defaults(["--weight", "x"]))
    assert (cfg["top_p"], cfg["max_new_tokens"]) == (0.85, 8192)  # eval_llm.py's
    cfg = resolve([ChatArgs, GenerationArgs], ["--model", "x"], defaults=chat_defaults(["--model", "x"]))
    assert (cfg["top_p"], cfg["max_new_tokens"]) == (0.95, 512)  # lmforge's own
    _after_table(workdir, monkeypatch)
    monkeypatch.setattr("sys.stdin", io.StringIO("你好\n"))
    argv = ["chat", "--load_from", "model", "--weight", "full_sft", "--hidden_size", "64", "--device", "cpu"]
    assert _main([*argv, "--num_hidden_layers", "1", "--max_new_tokens", "4"]) == 0
    assert _main([*argv, "--num_hidden_layers", "8"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(
            "lmforge: error: --num_hidden_layers 8: the model loaded from out/full_sft_64 has num_hidden_layers 1"
        )
    )


def test_grpo_example_runs_with_a_reward_model(workdir, monkeypatch, capsys, one_thread):
    """The basic GRPO example as written (2 prompts x 8 generations), its reward model a tiny one."""
    import json

    _after_table(workdir, monkeypatch)
    rm = workdir / "rm"
    if not rm.exists():
        rm.symlink_to(workdir / "out" / "full_sft_64")  # scored through a fresh one-label head
    argv = next(a for a, _ in TABLE if a[:2] == ["train", "grpo"])
    argv = [str(rm) if w == "../internlm2-1_8b-reward" else w for w in argv]
    assert _main(argv) == 0, capsys.readouterr().err[-2000:]
    state = json.loads((workdir / "out" / "grpo_64" / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == 1
    args = (workdir / "out" / "grpo_64" / "lmforge_args.yaml").read_text(encoding="utf-8")
    assert "per_device_train_batch_size: 16" in args and "reasoning: true" in args


@pytest.mark.parametrize(
    "command,extra,delay",
    [("distill", [], 0.5), ("qa", [], 1.0), ("qa", ["--base_url", "http://127.0.0.1:8000/v1"], 0.0)],
)
def test_generate_spaces_calls_to_openrouter_as_minimind(command, extra, delay):
    from lmforge.config.minimind import generate_rate_default

    cfg = _resolve(("generate", command), ["--model", "m", *extra])
    generate_rate_default(command, cfg)
    assert cfg["rate_limit_delay"] == delay
