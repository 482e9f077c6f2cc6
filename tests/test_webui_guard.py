"""What a browser may make `lmforge webui` do (lmforge/webui/guard.py): runs only inside
--runs_dir, files only inside the allowed roots (resolved: no `..` or symlink escapes), no
trust_remote_code unless --allow_remote_code, nothing uploaded; a login (--auth / --api_key)
before it listens beyond loopback, and with one, no page or API call without logging in
(checked over HTTP and in headless Chromium).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmforge.errors import LmforgeError
from lmforge.webui.forms import plan_run
from lmforge.webui.guard import (
    DATA_FIELDS,
    JSON_OR_PATH_FIELDS,
    MODEL_FIELDS,
    PATH_FIELDS,
    Access,
    exposure,
    is_loopback,
    login_check,
    parse_auth,
)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """work/ (the working folder, not a root), runs/, data/ (a root holding d.jsonl and a model
    folder), outside/ (a data file, a model folder, a registry)."""
    for name in ("work", "runs", "data", "outside"):
        (tmp_path / name).mkdir()
    for root in ("data", "outside"):
        (tmp_path / root / "d.jsonl").write_text('{"text": "hello"}\n', encoding="utf-8")
        model = tmp_path / root / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        (model / "model.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path / "work")
    access = Access.create(str(tmp_path / "runs"), str(tmp_path / "data"))
    return SimpleNamespace(root=tmp_path, access=access, data=str(tmp_path / "data" / "d.jsonl"))


def _plan(site, *flags, stage="sft", access=None):
    return plan_run(stage, ["--dataset", site.data, *flags], str(site.root / "runs"), access or site.access)


def test_a_plain_form_is_accepted_and_its_run_goes_to_the_runs_folder(site):
    plan = _plan(site, "--model_name_or_path", str(site.root / "data" / "model"))
    assert Path(plan.run_dir).parent == site.root / "runs"
    named = _plan(site, "--output_dir", str(site.root / "runs" / "mine" / "sft"))
    assert named.run_dir == str(site.root / "runs" / "mine" / "sft")
    relative = _plan(site, "--output_dir", "../runs/rel", f"--dataset={site.data}#1")
    assert relative.run_dir == "../runs/rel"


@pytest.mark.parametrize(
    "where",
    [
        "{root}/outside/run",  # another folder
        "{root}/runs/../outside/run",  # `..` out of the runs folder
        "{root}/runs",  # the runs folder itself
        "{root}/data/run",  # a data root is not for runs
        "/tmp",
    ],
)
def test_an_output_dir_outside_the_runs_folder_is_refused(site, where):
    out = where.format(root=site.root)
    with pytest.raises(LmforgeError, match=r"--output_dir .*: outside the runs folder .*--runs_dir"):
        _plan(site, "--output_dir", out)
    assert not (site.root / "outside" / "run").exists()


def test_a_symlink_out_of_the_runs_folder_is_refused(site):
    (site.root / "runs" / "link").symlink_to(site.root / "outside")
    (site.root / "data" / "link.jsonl").symlink_to(site.root / "outside" / "d.jsonl")
    with pytest.raises(LmforgeError, match="outside the runs folder"):
        _plan(site, "--output_dir", str(site.root / "runs" / "link" / "run"))
    with pytest.raises(LmforgeError, match="--dataset .*link.jsonl: outside the folders"):
        _plan(site, "--dataset", str(site.root / "data" / "link.jsonl"))


def test_save_dir_and_named_runs_stay_in_the_runs_folder(site):
    _plan(site, "--save_dir", str(site.root / "runs"), "--save_weight", "mine")
    with pytest.raises(LmforgeError, match="--save_dir .*outside the runs folder"):
        _plan(site, "--save_dir", str(site.root / "outside"))
    with pytest.raises(LmforgeError, match="--output_dir .*out/mine.*outside the runs folder"):
        _plan(site, "--save_weight", "mine")  # save_dir's default `out` is not the runs folder


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--dataset", "{root}/outside/d.jsonl"], "dataset"),
        (["--dataset", "{root}/outside/d.jsonl#1"], "dataset"),  # path#N: the path counts
        (["--dataset", "{data},{root}/outside/d.jsonl"], "dataset"),  # one of a mix
        (["--val_dataset", "{root}/outside/d.jsonl"], "val_dataset"),
        (["--model_name_or_path", "{root}/outside/model"], "model_name_or_path"),
        (["--model_name_or_path", "{root}/data/../outside/model"], "model_name_or_path"),
        (["--tokenizer_path", "{root}/outside/model"], "tokenizer_path"),
        (["--adapter_name_or_path", "{root}/data/model,{root}/outside/model"], "adapter_name_or_path"),
        (["--resume_from_checkpoint", "{root}/outside/model"], "resume_from_checkpoint"),
        (["--tokenized_path", "{root}/outside/cache"], "tokenized_path"),
        (["--dataset_dir", "{root}/outside"], "dataset_dir"),
        (["--deepspeed", "{root}/outside/ds.json"], "deepspeed"),
        (["--model_name_or_path", "{root}/work/model"], "model_name_or_path"),  # cwd: not a root here
    ],
)
def test_files_outside_the_allowed_roots_are_refused(site, flags, field):
    flags = [f.format(root=site.root, data=site.data) for f in flags]
    with pytest.raises(LmforgeError, match=rf"^--{field} .*: outside the folders this web UI may use \("):
        _plan(site, *flags)


def test_registry_names_and_adapter_bases_are_followed(site):
    """A dataset_info.yaml name reads the entry's file; an adapter folder reads its base model."""
    registry = site.root / "data" / "dataset_info.yaml"
    registry.write_text("mine:\n  file_name: d.jsonl\nescape:\n  file_name: ../outside/d.jsonl\n")
    _plan(site, "--dataset", "mine", "--dataset_dir", str(site.root / "data"))
    with pytest.raises(LmforgeError, match="--dataset .*outside/d.jsonl: outside the folders"):
        _plan(site, "--dataset", "escape#1", "--dataset_dir", str(site.root / "data"))
    adapter = site.root / "data" / "adapter"
    adapter.mkdir()
    base = str(site.root / "outside" / "model")
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    with pytest.raises(LmforgeError, match="--model_name_or_path .*outside/model: outside the folders"):
        _plan(site, "--model_name_or_path", str(adapter))


def test_default_roots_are_the_working_folder(site, monkeypatch):
    access = Access.create(str(site.root / "runs"))
    assert access.data_roots == (site.root / "work",)
    (site.root / "work" / "d.jsonl").write_text('{"text": "x"}\n')
    plan_run("sft", ["--dataset", "d.jsonl"], str(site.root / "runs"), access)
    with pytest.raises(LmforgeError, match="--dataset .*: outside the folders"):
        _plan(site, access=access)  # data/ is not a root by default
    with pytest.raises(LmforgeError, match=r"--data_roots .*missing: not a folder"):
        Access.create("runs", f"{site.root / 'data'},{site.root / 'missing'}")


def test_trust_remote_code_only_with_allow_remote_code(site):
    for flags in (["--trust_remote_code", "true"], ["--trust_remote_code"]):
        with pytest.raises(LmforgeError, match="trust_remote_code: refused.*--allow_remote_code"):
            _plan(site, *flags)
    allowed = Access.create(str(site.root / "runs"), str(site.root / "data"), allow_remote_code=True)
    assert "--trust_remote_code" in _plan(site, "--trust_remote_code", "true", access=allowed).flags


@pytest.mark.parametrize(
    "stage, flags, message",
    [
        ("sft", ["config.yaml"], "extra flags: 'config.yaml' is not a --flag"),
        ("sft", ["--push_to_hub", "true"], "push_to_hub: refused"),
        ("sft", ["--report_to", "wandb"], "report_to wandb: refused"),
        ("distill-api", ["--teacher_model", "t", "--base_url", "http://evil.example/v1"], "base_url: type"),
    ],
)
def test_uploads_and_config_files_are_refused(site, stage, flags, message):
    with pytest.raises(LmforgeError, match=message):
        _plan(site, *flags, stage=stage)


def test_local_choices_pass(site):
    _plan(site, "--report_to", "tensorboard", "--deepspeed", '{"zero_optimization": {"stage": 0}}')
    _plan(site, "--teacher_model", "t", "--base_url", "http://x/v1", "--api_key", "k", stage="distill-api")
    _plan(site, "--resume_from_checkpoint", "latest", "--output_dir", str(site.root / "runs" / "r"))
    with pytest.raises(LmforgeError, match="--output_dir out/sft-.*outside the runs folder"):
        _plan(site, "--resume_from_checkpoint", "latest")  # would resume under save_dir `out`


def test_every_stage_default_passes(site):
    """No false alarm: each stage's defaults with data inside a root are accepted."""
    from lmforge.stages import STAGES

    for stage in STAGES:
        plan_run(stage, ["--dataset", site.data], str(site.root / "runs"), site.access)


# Every text-like config field, sorted by the guard: a new field that may hold a path must be added
# to guard.py (or, when it holds none, here) before this test passes again.
NOT_PATHS = set(
    "activation_checkpointing_kwargs additional_trainable_parameters api_key apollo_proj apollo_scale_type apollo_target arch "
    "attn_implementation badam_mode badam_switch_mode base_url dataloader_multiprocessing_context "
    "ddp_backend debug device distill_mode dtype eval_strategy format freeze_extra_modules "
    "freeze_parameters freeze_trainable_modules fsdp galore_proj_type galore_target gradient_checkpointing_kwargs "
    "hub_model_id hub_revision hub_strategy hub_token include_for_metrics "
    "include_num_input_tokens_seen init_lora_weights interleave_probs label_names "
    "length_column_name liger_kernel_config log_level log_level_replica logging_strategy lora_bias "
    "lora_name lora_target loss_type loss_weights lr_scheduler_kwargs lr_scheduler_type "
    "metric_for_best_model mix_strategy modules_to_save nan_policy new_special_tokens optim optim_args "
    "optim_target_modules preset project quantization_type reasoning_effort report_to reward_funcs "
    "reward_weights rope_scaling run_name save_strategy save_weight scale_rewards stage system "
    "system_prompt teacher_model template text_column torch_compile_backend torch_compile_mode "
    "trackio_bucket_id trackio_space_id trackio_static_space_id train_sampling_strategy "
    "train_target truncation tuner user_prompt wandb_project".split()
)


def test_every_text_field_is_sorted_by_the_guard():
    from lmforge.config.loader import hf_training_specs, specs_of
    from lmforge.pipeline import GROUPS
    from lmforge.stages import STAGES, get_stage

    specs = {}
    for cls in GROUPS:
        specs.update(specs_of(cls, cls.__name__))
    for stage in STAGES:
        specs.update(specs_of(get_stage(stage).Args, stage))
    for name, spec in hf_training_specs().items():
        specs.setdefault(name, spec)
    text = {
        n for n, s in specs.items() if any(w in s.type_text.lower() for w in ("str", "dict", "union", "list"))
    }
    guarded = {*MODEL_FIELDS, *PATH_FIELDS, *DATA_FIELDS, *JSON_OR_PATH_FIELDS, "output_dir", "save_dir"}
    assert text - guarded - NOT_PATHS == set(), "new text fields: may they hold a path?"
    assert guarded <= set(specs), "guard.py names a field no config has"


def test_chat_tab_loads_only_inside_the_roots(site):
    from lmforge.webui.chat import ModelSlot

    slot = ModelSlot(device="cpu", access=site.access)
    with pytest.raises(LmforgeError, match="model .*outside/model: outside the folders"):
        slot.load(str(site.root / "outside" / "model"))
    with pytest.raises(LmforgeError) as err:  # inside: the check passes, the (empty) model fails
        slot.load(str(site.root / "data" / "model"))
    assert "outside the folders" not in str(err.value)


# --- login and exposure ---------------------------------------------------------------------------
def test_login_check_and_auth_parsing():
    assert parse_auth(None) is None and parse_auth("al:p:w") == ("al", "p:w")
    for bad in ("alice", ":pw", "alice:"):
        with pytest.raises(LmforgeError, match="--auth: expected USER:PASS"):
            parse_auth(bad)
    assert login_check(None, None) is None
    check = login_check(("alice", "s3cret"), "tok-ключ")
    assert check("alice", "s3cret") and check("anyone", "tok-ключ") and check("", "tok-ключ")
    assert not check("alice", "wrong") and not check("bob", "s3cret") and not check("alice", "")
    only_user = login_check(("alice", "s3cret"), None)
    assert not only_user("x", "") and not only_user("alice", "tok-ключ")


def test_exposure_needs_a_login_and_warns():
    roots = [Path("/r")]
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("myhost")
    assert exposure("127.0.0.1", False, False, roots) is None
    for host, share in (("0.0.0.0", False), ("127.0.0.1", True), ("::", False)):
        with pytest.raises(LmforgeError, match="set --auth USER:PASS or --api_key TOKEN"):
            exposure(host, share, False, roots)
        warning = exposure(host, share, True, roots)
        assert warning.startswith("WARNING: the web UI is reachable beyond this machine") and "/r" in warning


def _cli(*args, env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_WEBUI_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "lmforge", "webui", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--host", "0.0.0.0"], {}, "--host 0.0.0.0 would let anyone"),
        (["--share", "true"], {}, "--share true (a public gradio.live address) would let anyone"),
        (["--auth", "alice"], {}, "--auth: expected USER:PASS"),
        (["--host", "0.0.0.0"], {"LMFORGE_WEBUI_AUTH": "nocolon"}, "--auth: expected USER:PASS"),
        (["--data_roots", "/nonexistent/x"], {}, "--data_roots /nonexistent/x: not a folder"),
    ],
)
def test_refusals_at_start_are_one_line(args, env, message):
    res = _cli(*args, "--port", "7999", env=env)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("lmforge: error:")]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert message in lines[0]


# --- a server with a login ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    """`lmforge webui --auth alice:s3cret --api_key tok-123` on a free loopback port."""
    from test_webui import _free_port, _wait

    pytest.importorskip("gradio")
    work = tmp_path_factory.mktemp("locked")
    port, log_path = _free_port(), work / "webui.log"
    cmd = [sys.executable, "-m", "lmforge", "webui", "--port", str(port), "--runs_dir", str(work / "runs")]
    cmd += ["--auth", "alice:s3cret", "--api_key", "tok-123"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def serving() -> bool:  # the startup line is printed once the server answers
        assert proc.poll() is None, log_path.read_text()[-3000:]
        return "lmforge webui on" in log_path.read_text()

    try:
        _wait(serving, 120, "the locked web UI to serve")
        yield SimpleNamespace(url=url, log=log_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _status(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=data, headers=headers or {}), timeout=30
        ) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _login(url: str, user: str, password: str) -> tuple[int, str]:
    body = urllib.parse.urlencode({"username": user, "password": password}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/login", data=body), timeout=30) as r:
            return r.status, r.headers.get("set-cookie", "")
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_without_login_every_request_is_refused(locked):
    assert "login required" in locked.log.read_text()
    join = json.dumps({"data": [], "fn_index": 0, "session_hash": "x"}).encode()
    for path, data in (("/config", None), ("/gradio_api/info", None), ("/gradio_api/queue/join", join)):
        headers = {"Content-Type": "application/json"} if data else {}
        assert _status(locked.url + path, data, headers) == 401, path
        assert _status(locked.url + path, data, {**headers, "Authorization": "Bearer tok-123"}) == 401
    assert _login(locked.url, "alice", "wrong")[0] == 400 and _login(locked.url, "bob", "s3cret")[0] == 400
    for user, password in (("alice", "s3cret"), ("anyone", "tok-123")):
        code, cookie = _login(locked.url, user, password)
        assert code == 200 and "access-token" in cookie
        token = cookie.split(";")[0]
        assert _status(f"{locked.url}/config", headers={"Cookie": token}) == 200


def test_the_browser_sees_a_login_page_first(locked, tmp_path):
    from test_webui import CHROMIUM_ARGS, _chromium, _missing

    pytest.importorskip("playwright")
    if _chromium() is None:
        _missing("chromium not found")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(locked.url)
            page.wait_for_selector("input[type=password]")
            assert page.locator("#tab-training").count() == 0  # the app is not there
            page.fill("input[data-testid=textbox]", "alice")
            page.fill("input[type=password]", "wrong")
            page.get_by_role("button", name="Login").click()
            page.wait_for_selector("text=Incorrect")
            assert page.locator("#tab-training").count() == 0
            page.screenshot(path=str(tmp_path / "login-refused.png"), full_page=True)
            page.fill("input[data-testid=textbox]", "alice")
            page.fill("input[type=password]", "s3cret")
            page.get_by_role("button", name="Login").click()
            page.get_by_role("tab", name="Training").wait_for()
            page.screenshot(path=str(tmp_path / "logged-in.png"), full_page=True)
        finally:
            browser.close()
