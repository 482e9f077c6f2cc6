"""LLaMA-Factory users switch without rewriting: every argument of its reference (seed_003) is accepted
by the matching lmforge command, its YAML configs run as `lmforge train cfg.yaml` (the `stage:` key
picks the stage) / chat / export / eval / serve, and the arguments lmforge implements have their effect.
"""

import io
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from lmforge import cli
from lmforge.config.aliases import UNAVAILABLE
from lmforge.config.loader import canonical_key, resolve
from lmforge.errors import LmforgeError
from lmforge.pipeline import resolve_train_config

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
ROOT = Path(__file__).resolve().parents[1]


# --- (a) every argument of the reference's tables ------------------------------------------------
def reference_arguments() -> list[tuple[str, str, str, str]]:
    """(section, name, type, documented default or '') for every row of seed_003's tables."""
    files = sorted(REFERENCE.glob("seed_003_*.md"))
    if not files:
        pytest.skip("shared/reference is not beside this checkout", allow_module_level=True)
    text = files[0].read_text(encoding="utf-8")
    out, section = [], ""
    for i, chunk in enumerate(re.split(r"^   \* - ", text, flags=re.M)):
        head = re.search(r"list-table:: (\S+)", chunk)
        if i == 0:
            section = head.group(1) if head else ""
            continue
        lines = [x.strip().lstrip("- ").strip() for x in chunk.splitlines() if x.strip()]
        name = re.sub(r"\[.*\]$", "", lines[0])
        if name != "参数名称" and len(lines) >= 3:
            default = re.search(r"默认值为\s*`*([^`。，,\s]+)", lines[2])
            out.append((section, name, lines[1], default.group(1) if default else ""))
        if head:
            section = head.group(1)
    return out


def _command(section: str, name: str) -> str:
    if section == "ExportArguments":
        return "export"
    if section == "评估参数介绍":
        return "eval"
    if (
        section == "GeneratingArguments"
        or name in ("infer_backend", "infer_dtype")
        or name.startswith("vllm")
    ):
        return "chat"
    if name.startswith(("ppo_", "reward_model")):
        return "train ppo"
    if name.startswith("kto_"):
        return "train kto"
    if name == "simpo_gamma":
        return "train simpo"
    if section == "RLHF训练参数介绍":
        return "train dpo"
    return "train sft"


SAMPLES = {  # a value for arguments documented without a default (None)
    "additional_target": "embed_tokens",
    "lora_alpha": "16",
    "loraplus_lr_ratio": "16",
    "ref_model": "out/ref",
    "ref_model_adapters": "out/adapter",
    "ref_model_quantization_bit": "4",
    "reward_model": "out/rm",
    "reward_model_adapters": "out/adapter",
    "reward_model_quantization_bit": "4",
    "freeze_extra_modules": "embed_tokens",
    "badam_start_block": "0",
    "template": "qwen",
    "dataset": "data/a.jsonl",
    "eval_dataset": "data/b.jsonl",
    "image_dir": "images",
    "interleave_probs": "0.5,0.5",
    "preprocessing_num_workers": "1",
    "max_samples": "100",
    "eval_num_beams": "2",
    "packing": "true",
    "tool_format": "qwen",
    "tokenized_path": "cache/tok",
    "model_name_or_path": "out/base",
    "adapter_name_or_path": "out/adapter",
    "adapter_folder": "out/adapters",
    "cache_dir": "cache",
    "new_special_tokens": "<a>,<b>",
    "rope_scaling": "linear",
    "mixture_of_depths": "convert",
    "moe_aux_loss_coef": "0.01",
    "hf_hub_token": "hf_x",
    "ms_hub_token": "ms_x",
    "om_hub_token": "om_x",
    "compute_dtype": "bfloat16",
    "device_map": "auto",
    "model_max_length": "1024",
    "image_resolution": "262144",
    "video_resolution": "16384",
    "vllm_config": '{"max_model_len": 2048}',
    "quantization_bit": "4",
    "quantization_device_map": "auto",
    "export_dir": "out/export",
    "export_quantization_bit": "4",
    "export_quantization_dataset": "data/c.txt",
    "export_hub_model_id": "me/model",
    "save_dir": "out/eval",
    "default_system": "You are helpful.",
    "task": "mmlu_test",
}


def _resolve(command: str, argv: list[str]):
    from lmforge.cli import EVAL_DEFAULTS
    from lmforge.evaluate.args import EvalArgs
    from lmforge.export.args import ExportArgs
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.chat import ChatArgs

    if command.startswith("train "):
        return resolve_train_config(command.split()[1], argv)[1]
    groups = {"chat": [ChatArgs, GenerationArgs], "export": [ExportArgs], "eval": [EvalArgs, GenerationArgs]}
    return resolve(groups[command], argv, defaults=EVAL_DEFAULTS if command == "eval" else None)


def test_reference_has_its_148_arguments():
    names = [n for _, n, _, _ in reference_arguments()]
    assert len(names) == 148 and len(set(names)) == 148


@pytest.mark.parametrize(
    "section,name,type_text,default", [pytest.param(*row, id=row[1]) for row in reference_arguments()]
)
def test_every_reference_argument_is_accepted(section, name, type_text, default):
    """Accepted with the documented default (or a sample value): it lands on lmforge's key, or stops
    with the one-line reason of the UNAVAILABLE table; never `unknown option`."""
    command = _command(section, name)
    value = SAMPLES.get(name) or (default if default not in ("", "None") else "1")
    try:
        cfg = _resolve(command, [f"--{name}", value])
    except LmforgeError as e:
        key = canonical_key(name)[0]
        assert key in UNAVAILABLE, f"{command} --{name} {value}: {e}"
        assert str(e).startswith(f"command line: --{key} ") and "\n" not in str(e)
        return
    key = canonical_key(name, cfg.specs)[0]
    assert key in cfg.explicit or key in UNAVAILABLE, (command, name, key)


def test_unavailable_entries_name_what_to_do():
    for key, (accepted, reason) in UNAVAILABLE.items():
        # "*": no effect here, as in the reference; anything else refused says why, in one line
        assert "*" in accepted or (reason and "\n" not in reason), key
        assert all(a == a.lower() for a in accepted), key


def test_value_mappings():
    cfg = _resolve("train sft", ["--disable_gradient_checkpointing", "true"])
    assert cfg["gradient_checkpointing"] is False
    cfg = _resolve("train sft", ["--disable_gradient_checkpointing", "false"])
    assert cfg["gradient_checkpointing"] is True  # LLaMA-Factory checkpoints unless disabled
    cfg = _resolve("train sft", ["--enable_liger_kernel", "true", "--moe_aux_loss_coef", "0.02"])
    assert cfg["use_liger_kernel"] is True and cfg["router_aux_loss_coef"] == 0.02
    assert _resolve("export", ["--export_size", "2"])["max_shard_size"] == "2GB"
    assert (
        _resolve("chat", ["--infer_dtype", "bf16", "--infer_backend", "huggingface"])["dtype"] == "bfloat16"
    )
    assert _resolve("chat", ["--adapter_name_or_path", "a"])["lora_weight"] == "a"
    ppo = _resolve("train ppo", ["--ppo_score_norm", "true", "--ppo_whiten_rewards", "true"])
    assert ppo["score_norm"] is True and ppo["whiten_rewards"] is True
    with pytest.raises(LmforgeError, match=r"^command line: --backend vllm: .*lmforge serve"):
        _resolve("chat", ["--infer_backend", "vllm"])
    with pytest.raises(LmforgeError, match=r"^command line: --ppo_epochs 4: "):
        _resolve("train ppo", ["--ppo_epochs", "4"])


# --- (b) LLaMA-Factory style configs, run end to end ----------------------------------------------
TINY = {
    "cutoff_len": 64,
    "max_samples": 16,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_steps": 2,
    "logging_steps": 1,
    "save_strategy": "no",
    "plot_loss": False,
    "report_to": "none",
    "dataloader_num_workers": 0,
    "overwrite_output_dir": True,
}


@pytest.fixture(scope="module")
def lf(tmp_path_factory, synth_dir, one_thread):
    """A tiny base model, a LoRA SFT run on it (LF keys), and a folder for configs."""
    root = tmp_path_factory.mktemp("lf")
    base = root / "base"
    assert cli.main(["init", "--preset", "tiny", "--output_dir", str(base)]) == 0
    env = {"root": root, "base": base, "data": synth_dir}
    sft = root / "sft_lora"
    cfg = write(root, "sft.yaml", stage="sft", model_name_or_path=str(base), finetuning_type="lora",
                lora_rank=4, lora_target="all", dataset=str(synth_dir / "sft.jsonl"), template="qwen",
                output_dir=str(sft), learning_rate=1e-3, **TINY)  # fmt: skip
    assert cli.main(["train", str(cfg)]) == 0
    env["sft"] = sft
    return env


def write(folder: Path, name: str, **keys) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(keys, allow_unicode=True), encoding="utf-8")
    return path


def one_line_error(capsys, *needles: str) -> None:
    """The command's stderr ends in one `lmforge: error:` line (progress bars may precede it)."""
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert last.startswith("lmforge: error: ") and err.count("lmforge: error") == 1, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in last, last


def test_sft_lora_config_trained_an_adapter(lf):
    assert (lf["sft"] / "adapter_config.json").is_file()
    args = yaml.safe_load((lf["sft"] / "lmforge_args.yaml").read_text())
    assert args["stage"] == "sft" and args["tuner"] == "lora" and args["lora_rank"] == 4


def test_dpo_config_and_packing_is_refused(lf, capsys):
    out = lf["root"] / "dpo"
    keys = dict(stage="dpo", model_name_or_path=str(lf["base"]), finetuning_type="full", pref_beta=0.1,
                pref_loss="sigmoid", dataset=str(lf["data"] / "dpo.jsonl"), output_dir=str(out), **TINY)  # fmt: skip
    assert cli.main(["train", str(write(lf["root"], "dpo.yaml", **keys))]) == 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    bad = write(lf["root"], "dpo_pack.yaml", **{**keys, "packing": True, "output_dir": str(out) + "-p"})
    assert cli.main(["train", str(bad)]) == 2
    one_line_error(capsys, "train dpo: --packing", "drop --packing")
    assert not Path(str(out) + "-p").exists()  # refused before anything was written


def test_rm_then_ppo_config(lf, capsys):
    rm = lf["root"] / "rm"
    assert cli.main(["train", str(write(lf["root"], "rm.yaml", stage="rm", model_name_or_path=str(lf["base"]),
                     dataset=str(lf["data"] / "dpo.jsonl"), output_dir=str(rm), **{**TINY, "max_steps": 1}))]) == 0  # fmt: skip
    keys = dict(stage="ppo", model_name_or_path=str(lf["base"]), reward_model=str(rm), reward_model_type="full",
                ppo_score_norm=True, ppo_whiten_rewards=True, ppo_epochs=1, ppo_buffer_size=1,
                dataset=str(lf["data"] / "rlaif.jsonl"), reward_funcs="accuracy", max_completion_length=8,
                output_dir=str(lf["root"] / "ppo"), **{**TINY, "max_steps": 1})  # fmt: skip
    assert cli.main(["train", str(write(lf["root"], "ppo.yaml", **keys))]) == 0
    rows = [json.loads(x) for x in (lf["root"] / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert any("reward/mean" in r for r in rows)
    keys["ppo_epochs"] = 4
    assert cli.main(["train", str(write(lf["root"], "ppo4.yaml", **keys))]) == 2
    one_line_error(capsys, "--ppo_epochs 4", "one pass per rollout")


def test_pretrain_config_with_lf_dataset_info(lf):
    """LLaMA-Factory's own registry entry for pretraining text: `"columns": {"prompt": "text"}`."""
    data = lf["root"] / "data"
    data.mkdir()
    lines = (lf["data"] / "pretrain.jsonl").read_text(encoding="utf-8").splitlines()[:24]
    (data / "c4_demo.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    info = {"c4_demo": {"file_name": "c4_demo.jsonl", "columns": {"prompt": "text"}}}
    (data / "dataset_info.json").write_text(json.dumps(info))
    out = lf["root"] / "pt"
    cfg = write(lf["root"], "pt.yaml", stage="pt", model_name_or_path=str(lf["base"]), dataset="c4_demo",
                dataset_dir=str(data), output_dir=str(out), **{**TINY, "max_samples": None})  # fmt: skip
    assert cli.main(["train", str(cfg)]) == 0
    from lmforge.data.load import load_rows

    rows, _ = load_rows("c4_demo", "pretrain", dataset_dir=str(data))
    assert len(rows) == 24 and rows[0]["text"] == json.loads(lines[0])["text"]


def test_chat_config_and_vllm_backend(lf, capsys, monkeypatch):
    keys = dict(model_name_or_path=str(lf["base"]), adapter_name_or_path=str(lf["sft"]), template="qwen",
                finetuning_type="lora", infer_backend="huggingface", max_new_tokens=4, do_sample=False)  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert cli.main(["chat", str(write(lf["root"], "chat.yaml", **keys))]) == 0
    capsys.readouterr()
    keys["infer_backend"] = "vllm"
    assert cli.main(["chat", str(write(lf["root"], "chat_vllm.yaml", **keys))]) == 2
    one_line_error(capsys, "--backend vllm", "pip install vllm")


def test_export_config_and_shard_size(lf, capsys):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = lf["root"] / "export"
    keys = dict(model_name_or_path=str(lf["base"]), adapter_name_or_path=str(lf["sft"]), template="llama3",
                finetuning_type="lora", export_dir=str(out), export_size=1, export_device="cpu",
                export_legacy_format=False)  # fmt: skip
    assert cli.main(["export", str(write(lf["root"], "export.yaml", **keys))]) == 0
    assert (out / "model.safetensors").is_file()  # 1 GB shards: one file for a tiny model
    assert "<|start_header_id|>" in AutoTokenizer.from_pretrained(str(out)).chat_template  # --template
    quant = write(
        lf["root"], "export_q.yaml", **{**keys, "export_dir": str(out) + "-q", "export_quantization_bit": 4}
    )
    assert cli.main(["export", str(quant)]) == 2  # GPTQ, as LLaMA-Factory: GPU and its packages only
    one_line_error(capsys, "--format gptq")
    split = lf["root"] / "export_split"
    assert cli.main(["export", str(lf["base"]), "--export_dir", str(split), "--max_shard_size", "200KB"]) == 0
    index = json.loads((split / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    merged = {}
    for name in set(index["weight_map"].values()):
        merged.update(load_file(split / name))
    base = AutoModelForCausalLM.from_pretrained(str(lf["base"])).state_dict()
    assert (
        all((merged[k] == v).all() for k, v in base.items() if k in merged) and len(merged) >= len(base) - 1
    )


def test_eval_task_in_lf_layout(lf, capsys):
    task_dir = lf["root"] / "evaluation"
    shutil.copytree(ROOT / "lmforge" / "assets" / "bench_samples" / "mmlu", task_dir / "mmlu" / "data")
    results = lf["root"] / "eval_results"
    keys = dict(model_name_or_path=str(lf["base"]), template="fewshot", task="mmlu_test", task_dir=str(task_dir),
                lang="en", n_shot=1, batch_size=4, save_dir=str(results), seed=42,
                download_mode="reuse_dataset_if_exists")  # fmt: skip
    assert cli.main(["eval", str(write(lf["root"], "eval.yaml", **keys))]) == 0
    result = json.loads((results / "results.json").read_text())
    assert result["benchmark"] == "mmlu" and result["split"] == "test" and result["template"] == "plain"
    assert len((results / "predictions.jsonl").read_text().splitlines()) == 30  # 3 subjects x 10
    capsys.readouterr()
    keys.update(task="ceval_validation", save_dir=str(lf["root"] / "eval_ceval"))
    assert cli.main(["eval", str(write(lf["root"], "eval_c.yaml", **keys))]) == 2
    one_line_error(capsys, "--task ceval_validation", str(task_dir / "ceval"), "downloads nothing")


def test_api_config_serves(lf, monkeypatch):
    """`llamafactory-cli api cfg.yaml` → `lmforge serve cfg.yaml` (the server loop is stubbed)."""
    import uvicorn

    ran = []
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: ran.append(sockets[0].getsockname()[0])
    )
    keys = dict(model_name_or_path=str(lf["base"]), adapter_name_or_path=str(lf["sft"]), template="qwen",
                finetuning_type="lora", infer_backend="huggingface", port=0)  # fmt: skip
    assert cli.main(["serve", str(write(lf["root"], "api.yaml", **keys))]) == 0
    assert ran == ["127.0.0.1"]  # loopback unless asked


# --- effects of what lmforge implements -------------------------------------------------------------
def test_new_special_tokens_grow_the_vocabulary(lf):
    from transformers import AutoConfig, AutoTokenizer

    out = lf["root"] / "tokens"
    cfg = write(lf["root"], "tokens.yaml", stage="sft", model_name_or_path=str(lf["base"]),
                new_special_tokens="<tool_a>,<tool_b>", resize_vocab=True, dataset=str(lf["data"] / "sft.jsonl"),
                output_dir=str(out), **{**TINY, "max_steps": 1})  # fmt: skip
    assert cli.main(["train", str(cfg)]) == 0
    tok = AutoTokenizer.from_pretrained(str(out))
    before = len(AutoTokenizer.from_pretrained(str(lf["base"])))
    assert len(tok) == before + 2
    assert len(tok.encode("<tool_a>", add_special_tokens=False)) == 1
    vocab = AutoConfig.from_pretrained(str(out)).vocab_size
    assert vocab >= len(tok) and vocab % 64 == 0


def test_new_tokens_resize_a_full_embedding(tokenizer):
    """The embeddings grow (to a multiple of 64) when the new tokens do not fit in the spare rows."""
    import copy

    import torch

    from lmforge.models.options import grow_vocab
    from lmforge.models.scratch import init_model

    tok = copy.deepcopy(tokenizer)
    model = init_model(tok, preset="tiny", seed=0)
    model.resize_token_embeddings(len(tok))  # no spare rows
    old = model.get_input_embeddings().weight.detach().clone()
    assert grow_vocab(tok, model, ["<x_a>", "<x_b>"], resize=False) == 2
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == -(-(len(old) + 2) // 64) * 64 and len(tok) == len(old) + 2
    assert torch.equal(model.get_input_embeddings().weight[: len(old)], old)  # old rows kept
    ids = torch.tensor([tok.encode("<x_b>", add_special_tokens=False)])
    assert ids.shape == (1, 1) and model(input_ids=ids).logits.shape[-1] == rows


def test_train_from_scratch_reinitialises(lf):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(lf["base"])).state_dict()
    outs = {}
    for scratch in (False, True):
        out = lf["root"] / f"scratch-{scratch}"
        cfg = write(lf["root"], f"scratch-{scratch}.yaml", stage="sft", model_name_or_path=str(lf["base"]),
                    train_from_scratch=scratch, seed=7, learning_rate=1e-9, dataset=str(lf["data"] / "sft.jsonl"),
                    output_dir=str(out), **{**TINY, "max_steps": 1})  # fmt: skip
        assert cli.main(["train", str(cfg)]) == 0
        outs[scratch] = AutoModelForCausalLM.from_pretrained(str(out)).state_dict()
    key = next(k for k in base if "q_proj.weight" in k)
    assert (outs[False][key] - base[key]).abs().max() < 1e-5  # lr 1e-9: one step barely moves
    assert (outs[True][key] - base[key]).abs().max() > 1e-3  # fresh weights


def test_moe_aux_loss_coef_on_a_loaded_model(tokenizer, lf, capsys):
    import torch

    from lmforge.models.options import set_moe_aux_loss
    from lmforge.models.scratch import init_model

    model = init_model(tokenizer, preset="tiny", arch="qwen3_moe", use_moe=True, seed=0)
    model.config.output_router_logits = False
    set_moe_aux_loss(model, 0.123)
    ids = torch.tensor([[1, 2, 3, 4]])
    out = model(input_ids=ids, labels=ids)
    assert model.config.router_aux_loss_coef == 0.123 and out.aux_loss is not None
    cfg = write(lf["root"], "dense_moe.yaml", stage="sft", model_name_or_path=str(lf["base"]), moe_aux_loss_coef=0.1,
                dataset=str(lf["data"] / "sft.jsonl"), output_dir=str(lf["root"] / "dense"), **TINY)  # fmt: skip
    assert cli.main(["train", str(cfg)]) == 2
    one_line_error(capsys, "--moe_aux_loss_coef 0.1", "not a mixture of experts")


def test_ppo_score_norm_uses_running_moments():
    import torch

    from lmforge.rl.ppo_math import running_normalise

    moments, seen = [0, 0.0, 0.0], []
    for batch in ([1.0, 3.0], [5.0, 11.0, -2.0]):
        seen += batch
        got, moments = running_normalise(torch.tensor(batch), moments)
        ref = torch.tensor(seen)
        want = (torch.tensor(batch) - ref.mean()) / ref.std()
        assert torch.allclose(got, want, atol=1e-5)


def test_buffer_size_needs_streaming(capsys):
    assert cli.main(["train", "sft", "--dataset", "d.jsonl", "--buffer_size", "100"]) == 2
    one_line_error(capsys, "--buffer_size", "--streaming")


def test_buffer_size_shuffles_a_stream(tmp_path):
    from lmforge.data import assemble

    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(40)))
    texts = {}
    for buffer in (None, 16):
        argv = ["--dataset", str(path), "--streaming", "true", "--max_steps", "1"]
        _, cfg = resolve_train_config("pretrain", argv + (["--buffer_size", str(buffer)] if buffer else []))
        rows, _ = assemble.load_streaming(cfg, "pretrain", assemble.load_options(cfg))
        texts[buffer] = [r["text"] for r in rows]
    assert texts[None] == [f"document {i}" for i in range(40)]  # in file order by default
    assert texts[16] != texts[None] and sorted(texts[16]) == sorted(texts[None])
