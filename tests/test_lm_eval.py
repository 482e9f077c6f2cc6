"""lm-evaluation-harness on lmforge models: the `hf` model on a model folder, `local-completions`
against `lmforge serve`, and equality with `lmforge eval --task mc` on the bundled MMLU sample.

The model is the tiny preset with every matrix redrawn at unit variance (seeded): its answers
depend on the question (not always "A") and its letter scores are far apart, so float noise cannot
flip a prediction. The harness tasks are the YAMLs `lmforge.evaluate.harness.mc_task_yaml` writes
for the sample's three subjects (2-shot); nothing is downloaded (HF_HUB_OFFLINE, local csv files).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict

import pytest

torch = pytest.importorskip("torch")
lm_eval = pytest.importorskip("lm_eval")
yaml = pytest.importorskip("yaml")

from lmforge.cli import main  # noqa: E402
from lmforge.evaluate.bench import load_benchmark, samples_dir  # noqa: E402

N_SHOT = 2
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    from lmforge.models.scratch import init_model

    model = init_model(tokenizer, preset="tiny", seed=0, max_position_embeddings=1024)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 1.0, generator=gen)
    out = tmp_path_factory.mktemp("lm_eval") / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, tokenizer):
    """(include folder, task names) for the MMLU sample's subjects."""
    from lmforge.evaluate.harness import bos_prefix, mc_task_yaml

    root = samples_dir() / "mmlu"
    layout, _, subjects = load_benchmark(root)
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    names = []
    for s in subjects:
        files = {"test": root / "test" / f"{s.name}_test.csv", "dev": root / "dev" / f"{s.name}_dev.csv"}
        cfg = mc_task_yaml(s, files, layout, "en", N_SHOT, bos_prefix(tokenizer))
        (folder / f"{cfg['task']}.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
        names.append(cfg["task"])
    return folder, names


@pytest.fixture(scope="module")
def lmforge_mc(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lmforge_mc")
    argv = ["eval", str(model_dir), "--task", "mc", "--task_dir", "mmlu", "--n_shot", str(N_SHOT)]
    assert main([*argv, "--template", "plain", "--output_dir", str(out), "--overwrite", "true"]) == 0
    result = json.loads((out / "results.json").read_text())
    scores = defaultdict(list)
    for line in (out / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        scores[row["subject"]].append(row["scores"])
    return result, scores


def harness_scores(predictions: list[dict]) -> dict[str, list[list[float]]]:
    """{task: per document (by doc_id), the log-likelihood of each letter} from harness samples."""
    out = defaultdict(list)
    for row in sorted(predictions, key=lambda r: (r["task"], r["doc_id"])):
        out[row["task"]].append([float(r[0]) for r in row["resps"]])
    return out


def assert_same_as_lmforge(results: dict, predictions: list[dict], lmforge_mc) -> None:
    """Per subject the harness's accuracy equals lmforge's, and so does every letter's log-likelihood."""
    result, scores = lmforge_mc
    theirs = harness_scores(predictions)
    assert set(theirs) == set(results) and len(results) == 3
    for name, metrics in results.items():
        subject = name.removeprefix("lmforge_mmlu_")
        assert metrics["acc,none"] == result["subjects"][subject]["accuracy"], name
        assert len(theirs[name]) == len(scores[subject]) == 10
        for a, b in zip(theirs[name], scores[subject]):
            assert a == pytest.approx(b, abs=1e-3)


def test_backend_lm_eval_on_a_model_folder_equals_lmforge_mc(model_dir, tasks, lmforge_mc, tmp_path):
    result, scores = lmforge_mc
    predictions = {row.index(max(row)) for rows in scores.values() for row in rows}
    assert len(predictions) > 2 and 0 < result["accuracy"] < 1  # the answers depend on the question
    folder, names = tasks
    argv = ["eval", str(model_dir), "--backend", "lm_eval", "--tasks", ",".join(names), "--n_shot", "2"]
    argv += ["--include_path", str(folder), "--device", "cpu", "--output_dir", str(tmp_path / "o")]
    assert main(argv) == 0  # the harness's `hf` model on the folder, through simple_evaluate
    out = json.loads((tmp_path / "o" / "results.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    assert out["task"] == "lm_eval" and out["n-shot"] == dict.fromkeys(names, N_SHOT)
    assert_same_as_lmforge(out["results"], rows, lmforge_mc)


def test_harness_local_completions_against_lmforge_serve(model_dir, tasks, lmforge_mc):
    """The harness's OpenAI-completions client (echo + logprobs) on the server, in this process."""
    import uvicorn
    from lm_eval.tasks import TaskManager

    from lmforge.decode.batch import Runner
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.engine import Engine
    from lmforge.serve.app import create_app
    from lmforge.serve.scheduler import Scheduler
    from lmforge.serve.server import bind
    from lmforge.serve.service import Service

    engine = Engine.from_path(str(model_dir))
    sched = Scheduler(Runner(engine.model, engine.pad_id), engine.decode, engine.eos_ids)
    app = create_app(Service(engine, sched, {"m": None}, GenerationArgs(temperature=0)))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    sched.start()
    thread.start()
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/completions"
        folder, names = tasks
        out = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=f"base_url={url},model=m,tokenizer={model_dir},tokenizer_backend=huggingface,max_length=1024",
            tasks=names,
            task_manager=TaskManager(include_path=str(folder), include_defaults=False),
            batch_size=8,  # 8 prompts per request: the server scores a list of token-id prompts
        )
    finally:
        server.should_exit = True
        thread.join(30)
        sched.stop()
        sock.close()
    predictions = [
        {"task": t, "doc_id": s["doc_id"], "resps": s["filtered_resps"]}
        for t, rows in out["samples"].items()
        for s in rows
    ]
    assert_same_as_lmforge(out["results"], predictions, lmforge_mc)


def test_backend_lm_eval_errors_are_one_line(model_dir, capsys):
    argv = ["eval", str(model_dir), "--backend", "lm_eval"]
    for extra, message in (
        ([], "--backend lm_eval needs --tasks"),
        (["--tasks", "x", "--task_dir", "mmlu"], "--task_dir is a flag of lmforge's own tasks"),
        (["--tasks", "x", "--template", "plain"], "--template is a flag of lmforge's own tasks"),
    ):
        capsys.readouterr()
        assert main([*argv, *extra]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("lmforge: error:")]
        assert len(err) == 1 and message in err[0], err


def test_harness_flags_need_the_harness_backend(model_dir, capsys):
    argv = ["eval", str(model_dir), "--task", "mc", "--task_dir", "mmlu", "--tokenizer", str(model_dir)]
    assert main(argv) == 2
    assert "--tokenizer is a flag of --backend lm_eval" in capsys.readouterr().err


def test_missing_harness_is_one_line(model_dir, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    assert main(["eval", str(model_dir), "--backend", "lm_eval", "--tasks", "x"]) == 2
    assert "pip install" in capsys.readouterr().err
