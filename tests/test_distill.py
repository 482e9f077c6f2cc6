"""`train distill` (white-box KD, lmforge/training/distill.py and lmforge/stages/distill.py).

The loss against hand computations on tiny random models and hand-made chat batches (alpha=1 is
SFT's loss, alpha=0 is T²·KL, KL 0 for a copy of the student, teacher logits outside the label
positions never matter, the chunked path equals the plain one, padding-free equals padded), the
tokenizer check, LoRA and on-policy smoke runs, and issue 7's acceptance: a smaller student
distilled (alpha=0: the teacher's distributions are its only signal) from a teacher trained on
`data synth`'s one-digit arithmetic gives the teacher's greedy answers on held-out problems (in no
training file) more often than a student trained on the same rows with the cross-entropy alone.
"""

import copy
import json
import re

import pytest
import torch
from transformers import TrainingArguments

from lmforge.data.chat import encode_chat_batch
from lmforge.data.packing import FlatteningCollator, PaddingCollator
from lmforge.errors import LmforgeError
from lmforge.models.scratch import init_model
from lmforge.pipeline import run_train
from lmforge.training.distill import KDTrainer, check_same_tokenizer
from lmforge.training.trainer import LmforgeTrainer

QUIET = ["--report_to", "none", "--plot", "false", "--save_steps", "1000", "--logging_steps", "50"]
# A student narrower and shallower than the `tiny` teacher (hidden 64, 2 layers).
SMALL = ["--num_attention_heads", "2", "--num_key_value_heads", "1", "--intermediate_size", "96"]


# --- the loss on hand-made batches --------------------------------------------------------------
ROWS = [
    [{"role": "user", "content": "What is 3 + 4?"}, {"role": "assistant", "content": "3 + 4 = 7."}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a colour of the sky, please, in one word."},
        {"role": "assistant", "content": "Blue."},
    ],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help you today?"}],
]


@pytest.fixture(scope="module")
def features(tokenizer):
    enc = encode_chat_batch(tokenizer, [{"messages": m, "tools": None} for m in ROWS])
    return [{"input_ids": i, "labels": lab} for i, lab in zip(enc["input_ids"], enc["labels"])]


@pytest.fixture(scope="module")
def models(tokenizer):
    # No preset: the student's embedding fits the tokenizer (2304 rows), the teacher keeps the preset's 6400.
    student = init_model(tokenizer, seed=1, hidden_size=32, num_hidden_layers=1, **_small())
    teacher = init_model(tokenizer, preset="tiny", seed=2)  # hidden 64, 2 layers
    with torch.no_grad():  # a teacher with sharper, less uniform distributions than the init
        teacher.lm_head.weight.mul_(8.0)
    return student, teacher


def _small():
    return {"num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 96}


def _args(tmp_path):
    return TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)


def _kd(student, teacher, tmp_path, *, alpha, temperature=1.5, chunk=4):
    return KDTrainer(
        model=student, args=_args(tmp_path), teacher=teacher, alpha=alpha, temperature=temperature,
        loss_chunk_size=chunk,
    )  # fmt: skip


def _loss(trainer, batch):
    return trainer.compute_loss(trainer.model, dict(batch))


def _padded(tokenizer, features):
    return PaddingCollator(tokenizer.pad_token_id)(features)


@pytest.mark.parametrize("chunk", [4, 0])  # chunked path, plain path
def test_alpha_one_is_the_sft_loss(models, features, tokenizer, tmp_path, chunk, one_thread):
    student, teacher = models
    batch = _padded(tokenizer, features)
    kd = _loss(_kd(student, teacher, tmp_path, alpha=1.0, chunk=chunk), batch)
    sft = _loss(LmforgeTrainer(model=student, args=_args(tmp_path), loss_chunk_size=chunk), batch)
    assert kd.item() > 1.0
    assert kd.item() == pytest.approx(sft.item(), rel=1e-6)


def _hand_kl(student, teacher, batch, temperature):
    """Mean over label positions of sum_v p_t(v) (log p_t(v) - log p_s(v)), softmax at T, by loops."""
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    total, n = 0.0, 0
    rows, length = batch["labels"].shape
    for b in range(rows):
        for pos in range(length - 1):
            if batch["labels"][b, pos + 1] == -100:
                continue
            vocab = s.shape[-1]  # the teacher's embedding is padded to 6400 rows; the student's is not
            p_t = torch.softmax(t[b, pos, :vocab].double() / temperature, -1)
            log_p_s = torch.log_softmax(s[b, pos].double() / temperature, -1)
            total += float((p_t * (p_t.log() - log_p_s)).sum())
            n += 1
    return total / n


@pytest.mark.parametrize("chunk", [4, 0])
def test_alpha_zero_is_t2_kl(models, features, tokenizer, tmp_path, chunk, one_thread):
    student, teacher = models
    assert student.lm_head.weight.shape[0] < teacher.lm_head.weight.shape[0]  # padded teacher vocab
    batch = _padded(tokenizer, features)
    for temperature in (1.0, 2.0):
        loss = _loss(_kd(student, teacher, tmp_path, alpha=0.0, temperature=temperature, chunk=chunk), batch)
        expected = temperature**2 * _hand_kl(student, teacher, batch, temperature)
        assert expected > 0.05
        assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_chunked_path_matches_plain_path_with_gradients(models, features, tokenizer, tmp_path, one_thread):
    student, teacher = models
    batch = _padded(tokenizer, features)
    grads = []
    for chunk in (3, 0):
        trainer = _kd(student, teacher, tmp_path, alpha=0.3, chunk=chunk)
        student.zero_grad(set_to_none=True)
        loss = _loss(trainer, batch)
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in student.named_parameters()}))
    student.zero_grad(set_to_none=True)
    (chunked_loss, chunked), (plain_loss, plain) = grads
    assert chunked_loss == pytest.approx(plain_loss, rel=1e-5)
    for name, grad in plain.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(chunked[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_kl_is_zero_for_a_copy_of_the_student(models, features, tokenizer, tmp_path, one_thread):
    student, _ = models
    twin = copy.deepcopy(student).eval()
    batch = _padded(tokenizer, features)
    assert abs(_loss(_kd(student, twin, tmp_path, alpha=0.0), batch).item()) < 1e-5
    half = _loss(_kd(student, twin, tmp_path, alpha=0.5), batch).item()
    ce = _loss(_kd(student, twin, tmp_path, alpha=1.0), batch).item()
    assert half == pytest.approx(0.5 * ce, rel=1e-5)


def _shift_teacher_hidden(teacher, positions):
    """Hook: add a large offset to the teacher's final hidden states at (row, position) pairs."""

    def hook(module, args, output):
        hidden = output.last_hidden_state.clone()
        for b, pos in positions:
            hidden[b, pos] += 5.0
        output.last_hidden_state = hidden
        return output

    return teacher.model.register_forward_hook(hook)


@pytest.mark.parametrize("chunk", [4, 0])
def test_kl_only_at_label_positions(models, features, tokenizer, tmp_path, chunk, one_thread):
    student, teacher = models
    batch = _padded(tokenizer, features)
    trainer = _kd(student, teacher, tmp_path, alpha=0.0, chunk=chunk)
    base = _loss(trainer, batch).item()
    labels = batch["labels"]
    # Position t predicts token t+1: it is a KL position iff labels[t+1] != -100. Change the teacher
    # everywhere else (prompt, padding, the last position) and nothing may move.
    rows, length = labels.shape
    elsewhere = [
        (b, t) for b in range(rows) for t in range(length) if t == length - 1 or labels[b, t + 1] == -100
    ]
    handle = _shift_teacher_hidden(teacher, elsewhere)
    try:
        assert _loss(trainer, batch).item() == base
    finally:
        handle.remove()
    b, t = next((b, t) for b in range(rows) for t in range(length - 1) if labels[b, t + 1] != -100)
    handle = _shift_teacher_hidden(teacher, [(b, t)])  # the control: one label position
    try:
        assert abs(_loss(trainer, batch).item() - base) > 1e-3
    finally:
        handle.remove()


def test_padding_free_batch_gives_the_padded_loss(models, features, tokenizer, tmp_path, one_thread):
    student, teacher = models
    trainer = _kd(student, teacher, tmp_path, alpha=0.5)
    padded = _loss(trainer, _padded(tokenizer, features)).item()
    flat = FlatteningCollator(None, tokenizer.pad_token_id)(features)
    assert "attention_mask" not in flat and flat["input_ids"].shape[0] == 1
    assert _loss(trainer, flat).item() == pytest.approx(padded, rel=1e-5)


def test_metrics_hold_ce_and_kl(models, features, tokenizer, tmp_path, one_thread):
    student, teacher = models
    trainer = _kd(student, teacher, tmp_path, alpha=0.25, temperature=2.0)
    loss = _loss(trainer, _padded(tokenizer, features)).item()
    metrics = trainer._metrics["train" if student.training else "eval"]
    ce, kl = metrics["ce"][-1], metrics["kl"][-1]
    assert ce > 0 and kl > 0
    assert loss == pytest.approx(0.25 * ce + 0.75 * 4.0 * kl, rel=1e-5)


# --- runs ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def task(tmp_path_factory, one_thread):
    """data synth's corpora and a `tiny` teacher SFT-ed on the arithmetic rows for 150 steps, saved
    as MiniMind names it: save_dir/full_sft_64. It answers about half the held-out prompts right."""
    from lmforge.data.synth import synth

    root = tmp_path_factory.mktemp("distill")
    synth(str(root / "data"), seed=0, scale=1.0)
    run_train(
        "sft",
        ["--preset", "tiny", "--from_weight", "none", "--dataset", str(root / "data" / "math1_sft.jsonl")]
        + ["--output_dir", str(root / "out" / "full_sft_64"), "--max_length", "32"]
        + ["--per_device_train_batch_size", "32", "--learning_rate", "3e-3", "--max_steps", "150", *QUIET],
    )
    return root


def _answer(text: str) -> str | None:
    match = re.search(r"=\s*(-?\d+)", text)
    return match.group(1) if match else None


def greedy_answers(model_dir, prompts_file) -> list[str | None]:
    from lmforge.data.load import load_rows
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.engine import Engine

    rows, _ = load_rows(str(prompts_file), "prompt")
    engine = Engine.from_path(str(model_dir), device="cpu")
    gen = GenerationArgs(temperature=0, do_sample=False, max_new_tokens=12)
    return [_answer(o.text) for o in engine.generate_batch([r["prompt"] for r in rows], gen, batch_size=100)]


def agreement(ours, theirs) -> float:
    return sum(a is not None and a == b for a, b in zip(ours, theirs)) / len(theirs)


def _distill(task, *, alpha: str, name: str) -> str:
    """MiniMind's flags: a from-scratch student (hidden 48, 1 layer), the teacher by name."""
    run_train(
        "distill",
        ["--save_dir", str(task / "out"), "--from_teacher_weight", "full_sft", "--teacher_hidden_size", "64"]
        + ["--teacher_num_layers", "2", "--from_student_weight", "none", "--student_hidden_size", "48"]
        + ["--student_num_layers", "1", *SMALL, "--data_path", str(task / "data" / "math1_sft.jsonl")]
        + ["--save_weight", name, "--max_seq_len", "32", "--batch_size", "32", "--learning_rate", "5e-3"]
        + ["--max_steps", "400", "--alpha", alpha, "--temperature", "1.0", *QUIET],
    )
    return str(task / "out" / f"{name}_48")


def teacher_kl(student_dir, teacher_dir, prompts_file) -> float:
    """Mean per-token KL(teacher ‖ student) along the teacher's own greedy answers to the prompts
    (teacher-forced): how closely the student reproduces the teacher's distributions, a smooth
    measure that does not hinge on which side of an argmax a near-tie falls on a given CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.data.load import load_rows
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.engine import Engine

    rows, _ = load_rows(str(prompts_file), "prompt")
    engine = Engine.from_path(str(teacher_dir), device="cpu")
    gen = GenerationArgs(temperature=0, do_sample=False, max_new_tokens=12)
    answers = engine.generate_batch([r["prompt"] for r in rows], gen, batch_size=100)
    teacher = AutoModelForCausalLM.from_pretrained(str(teacher_dir)).eval()
    student = AutoModelForCausalLM.from_pretrained(str(student_dir)).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row, answer in zip(rows, answers):
            prompt = engine.encode(row["prompt"], gen)
            ids = torch.tensor([prompt + answer.token_ids])
            cut = slice(len(prompt) - 1, ids.shape[1] - 1)  # positions that predict the answer tokens
            t_logits, s_logits = teacher(ids).logits[0, cut].float(), student(ids).logits[0, cut].float()
            vocab = min(t_logits.shape[-1], s_logits.shape[-1])  # the student's vocabulary may be smaller
            t = torch.log_softmax(t_logits[:, :vocab], -1)
            s_ = torch.log_softmax(s_logits[:, :vocab], -1)
            total += float((t.exp() * (t - s_)).sum())
            count += cut.stop - cut.start
    return total / max(count, 1)


def test_distilled_student_gives_the_teachers_answers(task, tokenizer, tmp_path, one_thread):
    """On held-out problems (in no training file: the teacher's answers there are its own guesses,
    often wrong) the KD student reproduces the teacher's distributions far more closely than a student
    of the same size, seed and data trained with the cross-entropy alone (alpha 1: no teacher signal),
    and gives the teacher's answers far more often than before training."""
    held_out = task / "data" / "math1_heldout.jsonl"
    teacher_dir = task / "out" / "full_sft_64"
    teacher = greedy_answers(teacher_dir, held_out)
    fresh = tmp_path / "fresh"
    init_model(tokenizer, seed=42, hidden_size=48, num_hidden_layers=1, **_small()).save_pretrained(fresh)
    before = agreement(greedy_answers(fresh, held_out), teacher)
    distilled = _distill(task, alpha="0", name="full_dist")  # alpha 0: the teacher is the only signal
    ce_run = _distill(task, alpha="1", name="full_ce")
    after = agreement(greedy_answers(distilled, held_out), teacher)
    ce_only = agreement(greedy_answers(ce_run, held_out), teacher)
    kl_kd, kl_ce = teacher_kl(distilled, teacher_dir, held_out), teacher_kl(ce_run, teacher_dir, held_out)
    truth = [json.loads(line)["gt"][0] for line in open(held_out, encoding="utf-8")]
    print(
        f"agreement with the teacher's greedy answers: before {before:.3f}, KD {after:.3f}, CE only "
        f"{ce_only:.3f}; the teacher is right on {agreement(teacher, truth):.3f}; per-token "
        f"KL(teacher ‖ student) on its answers: KD {kl_kd:.4f}, CE only {kl_ce:.4f}"
    )
    # Measured (seeded, 200 held-out prompts) on two CPUs: agreement before 0.000, KD 0.540 / 0.380,
    # CE only 0.440 / 0.400 — which of KD and CE agrees more flips with the CPU's float kernels;
    # KL(teacher ‖ student) on the second CPU: KD 0.051, CE only 0.598 (×0.085). A trainer that drops
    # the teacher signal is the CE-only run (×1).
    assert before <= 0.1 and after >= 0.3
    assert kl_kd <= 0.5 * kl_ce, (kl_kd, kl_ce)
    records = [json.loads(line) for line in open(f"{distilled}/metrics.jsonl")]
    assert records[-1]["step"] == 400 and records[-1]["kl"] < records[0]["kl"] / 5
    assert records[-1]["loss"] == pytest.approx(records[-1]["kl"], rel=1e-5)  # alpha 0, T 1: loss = KL


def test_tokenizer_mismatch_is_one_clear_error(task, tokenizer, tmp_path, one_thread):
    from lmforge.models.tokenizer import load_tokenizer

    other = tmp_path / "other_teacher"
    init_model(tokenizer, preset="tiny", seed=3).save_pretrained(other)
    changed = load_tokenizer()
    changed.add_tokens(["<extra_token_for_the_test>"])
    changed.save_pretrained(other)
    with pytest.raises(LmforgeError) as err:
        check_same_tokenizer(tokenizer, str(other), student_where="out/student")
    message = str(err.value)
    assert "\n" not in message and str(other) in message and "out/student" in message
    assert "different tokenizers" in message
    same = tmp_path / "same_teacher"
    init_model(tokenizer, preset="tiny", seed=3).save_pretrained(same)
    tokenizer.save_pretrained(same)
    check_same_tokenizer(tokenizer, str(same), student_where="out/student")  # no error
    with pytest.raises(LmforgeError, match="different tokenizers"):
        run_train(
            "distill",
            ["--preset", "tiny", "--from_weight", "none", "--teacher_model", str(other), *QUIET]
            + ["--dataset", str(task / "data" / "math1_sft.jsonl"), "--max_samples", "8", "--max_steps", "1"]
            + ["--output_dir", str(tmp_path / "run")],
        )


def test_flag_checks(task, tmp_path, caplog, one_thread):
    base = ["--preset", "tiny", "--from_weight", "none", "--save_dir", str(task / "out"), *QUIET]
    base += ["--dataset", str(task / "data" / "math1_sft.jsonl"), "--max_samples", "8", "--max_steps", "1"]
    base += ["--output_dir", str(tmp_path / "run"), "--from_teacher_weight", "full_sft"]
    with pytest.raises(LmforgeError, match="full_sft: no model there, nor at .*full_sft_768"):  # default 768
        run_train("distill", base)
    with pytest.raises(LmforgeError, match="--beta applies to --distill_on_policy"):
        run_train("distill", [*base, "--teacher_hidden_size", "64", "--beta", "0.5"])
    with pytest.raises(LmforgeError, match="--alpha weighs"):
        run_train(
            "distill", [*base, "--teacher_hidden_size", "64", "--distill_on_policy", "true", "--alpha", "0.3"]
        )
    with caplog.at_level("WARNING", logger="lmforge"):  # MiniMind's size flag disagrees with the folder
        run_train("distill", [*base, "--teacher_hidden_size", "64", "--teacher_num_layers", "16"])
    assert "--teacher_num_layers 16: teacher" in caplog.text and "num_hidden_layers 2" in caplog.text
    # The saved config re-runs as it is: it holds every flag at its value, defaults included.
    run_train(
        "distill", [str(tmp_path / "run" / "lmforge_args.yaml"), "--output_dir", str(tmp_path / "again")]
    )
    assert (tmp_path / "again" / "model.safetensors").is_file()


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(f"{model_dir}/model.safetensors")


def test_lora_student(task, tokenizer, tmp_path, one_thread):
    student = tmp_path / "student"
    init_model(tokenizer, preset="tiny", seed=5).save_pretrained(student)
    tokenizer.save_pretrained(student)
    out = tmp_path / "lora"
    run_train(
        "distill",
        [
            "--model_name_or_path",
            str(student),
            "--teacher_model_name_or_path",
            str(task / "out" / "full_sft_64"),
        ]
        + ["--tuner", "lora", "--lora_rank", "4", "--dataset", str(task / "data" / "math1_sft.jsonl")]
        + [
            "--max_length",
            "32",
            "--per_device_train_batch_size",
            "8",
            "--max_steps",
            "4",
            "--logging_steps",
            "1",
        ]
        + ["--output_dir", str(out), "--learning_rate", "1e-2", "--report_to", "none", "--plot", "false"],
    )
    from safetensors.torch import load_file

    adapter = load_file(f"{out}/adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # B starts at 0: every one trained
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert len(records) == 4 and all(r["loss"] > 0 and r["kl"] > 0 and r["ce"] > 0 for r in records)


def test_on_policy_trains(task, tokenizer, tmp_path, one_thread):
    student = tmp_path / "student"
    init_model(
        tokenizer, preset="tiny", seed=6, hidden_size=48, num_hidden_layers=1, **_small()
    ).save_pretrained(student)
    tokenizer.save_pretrained(student)
    out = tmp_path / "on_policy"
    run_train(
        "distill",
        [
            "--model_name_or_path",
            str(student),
            "--teacher_model_name_or_path",
            str(task / "out" / "full_sft_64"),
        ]
        + ["--distill_on_policy", "true", "--beta", "0.5", "--max_gen_len", "8", "--max_samples", "64"]
        + [
            "--dataset",
            str(task / "data" / "math1_sft.jsonl"),
            "--max_length",
            "32",
            "--output_dir",
            str(out),
        ]
        + [
            "--per_device_train_batch_size",
            "8",
            "--max_steps",
            "3",
            "--learning_rate",
            "1e-3",
            "--logging_steps",
            "1",
        ]
        + ["--report_to", "none", "--plot", "false"],
    )
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert len(records) == 3 and all(r["loss"] > 0 and r["loss"] < 100 for r in records)
    assert records[0]["completions/mean_length"] > 0
    before, after = _weights(student), _weights(out)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before)
