"""`lmforge webui`: the form model, job control and run discovery as plain Python, then the real
app in headless Chromium (Debian's chromium driven by Playwright; no browser is downloaded).

Browser tests start `lmforge webui` in a subprocess on a free loopback port and check what a user
sees: a streamed chat answer that grows and ends as the Engine's greedy answer, the think toggle,
and a tiny pretraining run started from the form whose loss curve gains points until Stop ends
it cleanly. Every request the page makes must go to the loopback server. Screenshots are saved to
each test's tmp dir. Without Chromium (or Playwright, or Gradio) the browser tests skip, except
under CI, where that is a failure: .ci/run installs chromium.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmforge.errors import LmforgeError
from lmforge.webui.chat import build_messages, find_model_dirs
from lmforge.webui.forms import all_fields, form_flags, form_values, plan_run
from lmforge.webui.jobs import JobBoard, LogBuffer, TrainJob, read_metrics

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_PREFIXES = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:", "about:")


# --- the form: fields, defaults, flags ---------------------------------------------------------
def test_form_fields_come_from_the_config_dataclasses():
    from dataclasses import fields as dc_fields

    from lmforge.pipeline import GROUPS
    from lmforge.stages import STAGES, get_stage
    from lmforge.tuners.args import TUNERS

    form = all_fields()
    for cls in GROUPS:
        assert {f.name for f in dc_fields(cls)} - {"stage"} <= set(form), cls.__name__
    for stage in STAGES:
        for f in dc_fields(get_stage(stage).Args):
            assert form[f.name].shown_for(stage) and stage in form[f.name].stages
    assert form["tuner"].kind == "choice" and form["tuner"].choices == tuple(TUNERS)
    assert form["packing"].kind == "tristate"  # bool | None: on, off, or the stage's default
    assert (form["max_steps"].kind, form["learning_rate"].kind, form["dataset"].kind) == (
        "int",
        "float",
        "text",
    )
    assert form["use_moe"].kind == "bool" and "mixture-of-experts" in form["use_moe"].help
    assert form["beta"].shown_for("dpo") and not form["beta"].shown_for("pretrain")


def test_only_values_that_differ_from_the_stage_default_become_flags():
    values = form_values("pretrain")
    assert values["packing"] == "true"  # pretrain's own defaults: from scratch, Muon at its rate
    assert (values["optim"], values["learning_rate"]) == ("muon", 8e-3)
    assert form_flags("pretrain", values) == []
    values.update(preset="tiny", max_steps=20.0, packing="false", learning_rate=8e-3)
    assert form_flags("pretrain", values, "--warmup_steps 2") == [
        "--preset", "tiny", "--packing", "false", "--max_steps", "20", "--warmup_steps", "2",
    ]  # fmt: skip
    dpo = form_values("dpo", tuner="lora")  # a PEFT tuner's default learning rate is 1e-4
    assert dpo["learning_rate"] == 1e-4 and dpo["beta"] == 0.1
    assert form_flags("dpo", dpo) == ["--tuner", "lora"]
    assert form_values("simpo")["beta"] == 2.0  # the same field, another stage's default


def test_plan_validates_like_the_cli_and_fixes_the_run_folder(tmp_path):
    plan = plan_run("sft", ["--dataset", "d.jsonl", "--learning_rate", "1e-3"], str(tmp_path))
    assert Path(plan.run_dir).parent == tmp_path and Path(plan.run_dir).name.startswith("sft-")
    assert plan.flags[-2:] == ["--output_dir", plan.run_dir]
    assert plan.argv[1:5] == ["-m", "lmforge", "train", "sft"]
    assert shlex.split(plan.cli)[:3] == ["lmforge", "train", "sft"]
    named = plan_run("sft", ["--output_dir", str(tmp_path / "mine")], "out")
    assert named.run_dir == str(tmp_path / "mine") and named.flags.count("--output_dir") == 1
    with pytest.raises(LmforgeError, match=r"--learning_rate expects float; got 'fast'"):
        plan_run("sft", form_flags("sft", {}, "--learning_rate fast"), "out")
    with pytest.raises(LmforgeError, match=r"unknown option --learnig_rate; did you mean --learning_rate"):
        plan_run("sft", ["--learnig_rate", "1"], "out")
    with pytest.raises(LmforgeError, match="extra flags"):
        form_flags("sft", {}, "--system 'unclosed")


# --- logs, jobs, runs --------------------------------------------------------------------------
def test_log_buffer_keeps_lines_like_a_terminal():
    log = LogBuffer(max_lines=3)
    log.feed("start\nbar  10%\rbar  50%")
    assert log.text() == "start\nbar  50%"
    log.feed("\rbar 100%\r\nline a\nline b\nline c\npartial")
    assert log.text() == "line a\nline b\nline c\npartial"


def test_read_metrics_skips_a_line_still_being_written(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "lo', encoding="utf-8")
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.5}]
    assert read_metrics(tmp_path / "missing") == []


# The parent starts a grandchild in its own process group, says "ready", then waits. "polite":
# both die on SIGTERM; "stubborn": both ignore it, so only the SIGKILL after the grace ends them.
JOB_SCRIPT = """
import signal, subprocess, sys, time
mode = sys.argv[1]
child_code = "import signal, time\\n" + (
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n" if mode == "stubborn" else "") + "time.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", child_code])
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready child", child.pid, flush=True)
time.sleep(600)
"""


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("mode, code", [("polite", -signal.SIGTERM), ("stubborn", -signal.SIGKILL)])
def test_stop_ends_the_whole_process_group(tmp_path, mode, code):
    job = TrainJob([sys.executable, "-c", JOB_SCRIPT, mode], str(tmp_path), "job")
    child = int(_wait(lambda: re.search(r"ready child (\d+)", job.log.text()), 60, "the job").group(1))
    assert job.status().startswith(f"running: pid {job.pid}")
    job.stop(grace_s=1.0)
    _wait(job.finished, 60, "the job to end")
    assert job.status().startswith(f"stopped (return code {code}): pid {job.pid}")
    assert _gone(job.pid)
    _wait(lambda: _gone(child), 30, "the grandchild to end")


def test_one_run_at_a_time(tmp_path):
    board = JobBoard()
    board.start([sys.executable, "-c", "import time; time.sleep(600)"], str(tmp_path), "sleep")
    try:
        with pytest.raises(LmforgeError, match="already going"):
            board.start([sys.executable, "-c", "pass"], str(tmp_path), "pass")
    finally:
        board.shutdown(wait_s=5)
    assert not board.job.running and board.job.status().startswith("stopped")


def test_find_model_dirs_lists_runs_with_a_model(tmp_path):
    run = tmp_path / "demo" / "sft"
    (run / "checkpoint-5").mkdir(parents=True)
    for d in (run, run / "checkpoint-5"):
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(b"")
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text("{}")
    assert sorted(find_model_dirs(tmp_path)) == sorted([str(run), str(tmp_path / "lora")])
    assert find_model_dirs(tmp_path / "missing") == []


def test_chat_history_turns():
    hist = [
        {"role": "user", "content": f"q{i}"} if i % 2 == 0 else {"role": "assistant", "content": f"a{i}"}
        for i in range(4)
    ]
    assert build_messages(hist, "now", None, 0) == [{"role": "user", "content": "now"}]
    msgs = build_messages(hist, "now", "be brief", 1)
    assert [m["content"] for m in msgs] == ["be brief", "q2", "a3", "now"]


def _cli(*args, timeout=120):
    env = {**os.environ, "LMFORGE_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "lmforge", "webui", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "70000"], "--port 70000: expected 1-65535"),
        (["--port", "many"], "--port expects int; got 'many'"),
        (["--modle", "x"], "did you mean --model"),
        (["--model", "/nonexistent/model", "--port", "7999"], "model '/nonexistent/model' not found"),
    ],
)
def test_bad_input_is_one_line(args, message):
    res = _cli(*args)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("lmforge: error:")]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert message in lines[0]


def test_help_lists_every_flag_without_importing_gradio():
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lmforge", "webui", "--help"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0
    for flag in ("--host", "--port", "--model", "--runs_dir", "--share"):
        assert flag in res.stdout
    assert "'127.0.0.1'" in res.stdout and "gradio" not in res.stderr


# --- the app in headless Chromium --------------------------------------------------------------
def _missing(what: str):
    if IN_CI:
        pytest.fail(f"{what}: CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(f"{what} (install Debian's chromium to run the web UI browser tests)")


def _chromium() -> str | None:
    for cand in (os.environ.get("LMFORGE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, synth_dir):
    """`lmforge webui` starting (not yet serving) on a free loopback port; runs_dir is empty and
    the forms may read the synthetic data."""
    for module, what in (
        ("playwright", "playwright (pip)"),
        ("gradio", 'gradio (pip install "lmforge[webui]")'),
    ):
        try:
            __import__(module)
        except ImportError:
            _missing(f"{what} is not installed")
    if _chromium() is None:
        _missing("chromium not found")
    work = tmp_path_factory.mktemp("webui")
    runs, port, log_path = work / "runs", _free_port(), work / "webui.log"
    runs.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "LMFORGE_LOG_LEVEL": "INFO",
    }  # 1 thread: tiny models, busy CPUs
    cmd = [sys.executable, "-m", "lmforge", "webui", "--port", str(port), "--runs_dir", str(runs)]
    cmd += ["--data_roots", str(synth_dir)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", runs=runs, proc=proc, log=log_path)
    finally:
        proc.send_signal(signal.SIGTERM)  # shuts down like Ctrl+C, stopping a run still going
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def chat_model(server, tmp_path_factory, one_thread):
    """A tiny model trained (while the server starts) to answer "hi" with
    <think>say hello</think>hello world, this is lmforge.; saved as a run folder in runs_dir."""
    from test_engine import build_trained

    model, tok = build_trained(tmp_path_factory.mktemp("chat-train"))
    out = server.runs / "chat-tiny"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def webui(server, chat_model):
    """The server, once it answers (the page lists runs_dir's models when it loads)."""

    def serving() -> bool:
        if server.proc.poll() is not None:
            pytest.fail(
                f"lmforge webui exited with {server.proc.returncode}: {server.log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(server.url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    _wait(serving, 120, "lmforge webui to serve")
    return server


@pytest.fixture(scope="module")
def browser(webui, tmp_path_factory):
    """A Chromium context with a fresh profile; every non-loopback request is blocked and recorded."""
    from playwright.sync_api import sync_playwright

    external: list[str] = []

    def guard(route):
        url = route.request.url
        if url.startswith(LOCAL_PREFIXES):
            route.continue_()
        else:
            external.append(url)
            route.abort()

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=_chromium(),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        ctx.set_default_timeout(60_000)
        ctx.route("**/*", guard)
        try:
            yield SimpleNamespace(ctx=ctx, external=external)
        finally:
            ctx.close()


@pytest.fixture
def page(browser, webui):
    page = browser.ctx.new_page()
    page.goto(webui.url)
    yield page
    page.close()
    assert browser.external == [], f"the page reached outside the machine: {browser.external}"


BOT_TEXTS = "() => Array.from(document.querySelectorAll('#chatbot [data-testid=\"bot\"]')).map(b => b.innerText.trim())"
RECORD_BOT_TEXT = """() => {
  window.__seen = [];
  const record = () => {
    const text = Array.from(document.querySelectorAll('#chatbot [data-testid="bot"]'))
      .map(b => b.innerText.trim()).join('|');
    if (window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
  };
  new MutationObserver(record).observe(document.querySelector('#chatbot'),
    {subtree: true, childList: true, characterData: true});
}"""


def test_chat_streams_the_greedy_answer(page, webui, chat_model, tmp_path):
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.engine import Engine

    expected = Engine.from_path(str(chat_model)).chat(
        [{"role": "user", "content": "hi"}], GenerationArgs(temperature=0)
    )
    assert expected.text and expected.reasoning_content  # the fixture model thinks, then answers

    page.click("#chat-model input")
    page.locator("#chat-model li", has_text=str(chat_model)).first.click()
    page.click("#chat-load")
    page.wait_for_function("() => document.querySelector('#chat-status').innerText.startsWith('loaded ')")
    assert str(chat_model) in page.inner_text("#chat-status")
    page.fill("#chat-temperature input[type=number]", "0")  # greedy
    page.press("#chat-temperature input[type=number]", "Enter")
    page.evaluate(RECORD_BOT_TEXT)
    page.fill("#chat-input textarea", "hi")
    page.click("#chat-send")
    page.wait_for_function(f"() => ({BOT_TEXTS})().slice(-1)[0] === {expected.text!r}")
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)

    seen = [s for s in page.evaluate("window.__seen") if s]
    assert len(seen) >= 3, f"the answer arrived in one piece, not streamed: {seen}"
    for before, after in zip(seen, seen[1:]):
        assert after.startswith(before) and len(after) > len(before), (before, after)
    texts = page.evaluate(BOT_TEXTS)
    assert texts[-1] == expected.text
    assert any(expected.reasoning_content in t for t in texts[:-1])  # the "Thinking" bubble

    page.uncheck("#chat-show-thinking input")
    page.fill("#chat-input textarea", "hi")
    page.click("#chat-send")
    n = len(texts)
    page.wait_for_function(
        f"() => ({BOT_TEXTS})().length === {n + 1} && ({BOT_TEXTS})()[{n}] === {expected.text!r}"
    )
    assert expected.reasoning_content not in page.evaluate(BOT_TEXTS)[n]
    page.screenshot(path=str(tmp_path / "chat-no-thinking.png"), full_page=True)
    print(f"screenshots in {tmp_path}")


PLOTTED_POINTS = """() => {
  const line = document.querySelector('#train-loss g.mark-line path');
  return line ? (line.getAttribute('d').match(/[ML]/g) || []).length : 0;
}"""
STATUS = "() => document.querySelector('#train-status textarea, #train-status input').value"


def test_training_run_from_the_form(page, webui, synth_dir, tmp_path):
    page.get_by_role("tab", name="Training").click()
    page.wait_for_selector("#field-dataset textarea")
    # pretrain's default shown: from scratch, Muon at its rate (test_only_values_... checks the optim)
    assert page.input_value("#field-learning_rate input") == "0.008"
    form = {
        "preset": "tiny",
        "dataset": f"{synth_dir / 'pretrain.jsonl'}#200",
        "max_steps": "2000",
        "per_device_train_batch_size": "4",
        "gradient_accumulation_steps": "1",
        "max_length": "64",
        "logging_steps": "1",
        "save_steps": "1000",
    }
    for name, value in form.items():
        page.fill(f"#field-{name} textarea, #field-{name} input", value)
    page.click("#train-start")
    page.wait_for_function(f"() => ({STATUS})().startsWith('running: pid')")
    status = page.evaluate(STATUS)
    pid = int(re.search(r"pid (\d+)", status).group(1))
    run_dir = Path(re.search(r"run folder (.+)$", status).group(1))
    try:
        cli = shlex.split(page.input_value("#train-cli textarea"))
        assert cli[:3] == ["lmforge", "train", "pretrain"]
        flags = dict(zip(cli[3::2], cli[4::2]))
        assert flags == {f"--{k}": v for k, v in form.items()} | {"--output_dir": str(run_dir)}
        assert run_dir.parent == webui.runs  # no --output_dir in the form: a new folder in runs_dir

        counts = [
            page.wait_for_function(
                f"() => {{ const n = ({PLOTTED_POINTS})(); return n >= 1 && n; }}"
            ).json_value()
        ]
        for _ in range(2):  # two more refreshes, each with more points on the curve
            counts.append(
                page.wait_for_function(
                    f"() => {{ const n = ({PLOTTED_POINTS})(); return n > {counts[-1]} && n; }}"
                ).json_value()
            )
        assert counts[0] < counts[1] < counts[2]
        assert "stage pretrain" in page.input_value("#train-log textarea")
        page.screenshot(path=str(tmp_path / "train-running.png"), full_page=True)

        page.click("#train-stop")
        page.wait_for_function(f"() => ({STATUS})().startsWith('stopped')", timeout=90_000)
        assert page.evaluate(STATUS).startswith(f"stopped (return code 0): pid {pid}")  # SIGTERM: clean exit
        _wait(lambda: _gone(pid), 30, "the training process to be gone")
        page.wait_for_function(f"() => ({PLOTTED_POINTS})() >= {counts[-1]}")
        page.screenshot(path=str(tmp_path / "train-stopped.png"), full_page=True)
    finally:
        if not _gone(pid):
            os.killpg(pid, signal.SIGKILL)
    assert list(run_dir.glob("checkpoint-*/trainer_state.json")), "SIGTERM should save a checkpoint"
    steps = [r["step"] for r in read_metrics(run_dir) if "loss" in r]
    assert len(steps) >= counts[-1] and steps == sorted(steps)
    print(f"screenshots in {tmp_path}")


def test_training_form_refusals(page, webui, synth_dir, tmp_path):
    """trust_remote_code (a checkbox or an extra flag), an --output_dir outside the runs folder and
    a model outside the allowed roots are each refused with one line, and nothing starts."""
    before = sorted(webui.runs.iterdir())
    page.get_by_role("tab", name="Training").click()
    page.fill("#field-dataset textarea, #field-dataset input", str(synth_dir / "pretrain.jsonl"))
    page.fill("#field-preset textarea, #field-preset input", "tiny")
    page.get_by_text("Model options").click()
    page.check("#field-trust_remote_code input")

    def refused(expected: str) -> None:  # consecutive calls expect different lines
        page.click("#train-start")
        page.wait_for_function(f"() => ({STATUS})().includes({expected!r})")
        status = page.evaluate(STATUS)
        assert status.startswith("error: ") and "\n" not in status, status

    refused("trust_remote_code: refused; the web UI does not run code from model folders")
    page.uncheck("#field-trust_remote_code input")
    elsewhere = tmp_path / "elsewhere"
    page.fill("#field-output_dir textarea, #field-output_dir input", str(elsewhere))
    refused(f"--output_dir {elsewhere}: outside the runs folder {webui.runs}")
    page.fill("#field-output_dir textarea, #field-output_dir input", "")
    page.get_by_text("Trainer options").click()
    page.fill("#train-extra textarea, #train-extra input", "--trust_remote_code true")
    refused("trust_remote_code: refused")
    page.fill("#train-extra textarea, #train-extra input", "")
    page.fill("#field-model_name_or_path textarea, #field-model_name_or_path input", str(tmp_path))
    refused(f"--model_name_or_path {tmp_path}: outside the folders this web UI may use")
    page.screenshot(path=str(tmp_path / "train-refused.png"), full_page=True)
    assert sorted(webui.runs.iterdir()) == before and not elsewhere.exists()
