"""`lmforge serve`: load the model and its adapters, bind the socket, run uvicorn.

Several adapters share one base model in memory through PEFT (`load_adapter`; the batch's adapter
is activated with `set_adapter`, the base runs under `disable_adapter()`), and each is served under
its own `model` name. The socket is bound before the startup line is logged, so the URL it prints
(with the real port when `--port 0`) already accepts connections.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket

from lmforge.errors import LmforgeError
from lmforge.infer.args import GenerationArgs
from lmforge.serve.args import ServeArgs, parse_adapters

logger = logging.getLogger("lmforge")


def api_key_of(args: ServeArgs) -> str | None:
    return args.api_key or os.environ.get("LMFORGE_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def attach_adapters(engine, adapters: dict[str, str], args: ServeArgs) -> None:
    """Load every adapter onto `engine.model` (turning it into a multi-adapter PeftModel)."""
    if not adapters:
        return
    try:
        from peft import PeftModel
    except ImportError as e:
        raise LmforgeError("--adapters needs peft: pip install peft") from e
    from lmforge.models.locate import find_adapter

    model = engine.model
    for name, path in adapters.items():
        try:
            found = find_adapter(
                path, args.save_dir, args.model, hidden_size=args.hidden_size, use_moe=args.use_moe
            )
        except LmforgeError as e:  # name the adapter as the user wrote it
            raise LmforgeError(f"--adapters {name}={path}: {str(e).split(': ', 1)[-1]}") from None
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(found, adapter_name=name)
            else:
                model = PeftModel.from_pretrained(model, found, adapter_name=name)
        except Exception as e:  # wrong base, unsupported tuner, ...
            raise LmforgeError(f"--adapters {name}={path}: cannot load onto the model ({e})") from None
    model.to(engine.device).eval()
    engine.model = model


def served_names(engine, args: ServeArgs, adapters: dict[str, str]) -> dict[str, str | None]:
    """Served name → PEFT adapter name (None: the base weights). When the model itself is an
    adapter (`--lora_weight`, an adapter folder or a LoRA run), its bare base is `NAME-base`."""
    main = args.served_model_name or str(args.model or args.weight).rstrip("/")
    if "default" in getattr(engine.model, "peft_config", {}):
        models: dict[str, str | None] = {main: "default", f"{main}-base": None}
    else:
        models = {main: None}
    for name in adapters:
        if name in models:
            raise LmforgeError(f"--adapters: {name!r} is already the name of the main model")
        models[name] = name
    return models


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise LmforgeError(f"--host {host}: not a usable address ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise LmforgeError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
    sock.listen(2048)
    return sock


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_service(args: ServeArgs, gen: GenerationArgs, adapters: dict[str, str]):
    """Load the model and its adapters; returns the `Service` (its scheduler not started yet)."""
    from lmforge.decode.batch import Runner
    from lmforge.infer.chat import load_engine
    from lmforge.serve.scheduler import Scheduler
    from lmforge.serve.service import Service, grammars_for

    engine = load_engine(args)  # type: ignore[arg-type]
    if args.system is not None:
        engine.system = args.system
    attach_adapters(engine, adapters, args)
    models = served_names(engine, args, adapters)
    from lmforge.serve.vision import MediaPolicy, solo_runner

    media = MediaPolicy.from_args(args.allowed_local_media_path, args.limit_mm_per_prompt)
    runner = Runner(engine.model, engine.pad_id)
    scheduler = Scheduler(
        runner,
        engine.decode,
        engine.eos_ids,
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        batch_wait_s=args.batch_wait_ms / 1000,
        grammars=grammars_for(engine),
        solo=solo_runner(engine, runner) if hasattr(engine, "encode_vision") else None,
    )
    roots = {name: adapters.get(name, str(args.model or args.weight)) for name in models}
    return Service(engine, scheduler, models, gen, api_key=api_key_of(args), roots=roots, media=media)


def run_serve(args: ServeArgs, gen: GenerationArgs) -> int:
    """Serve until interrupted; returns the exit status."""
    args.validate()
    if not args.model and not args.weight:
        raise LmforgeError("serve: name a model: `lmforge serve MODEL_OR_RUN` (or --model)")
    adapters = parse_adapters(args.adapters, args.lora_modules)
    if args.backend == "vllm":
        from lmforge.serve.vllm import run_vllm

        return run_vllm(args, gen, adapters, api_key_of(args))
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise LmforgeError('serve needs fastapi and uvicorn: pip install "lmforge[serve]"') from None
    from lmforge.serve.app import create_app

    service = build_service(args, gen, adapters)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    logger.info(
        "serving %s at http://%s:%d/v1 (batches of up to %d, queue %d, %s)",
        ", ".join(service.models),
        f"[{host}]" if ":" in host else host,
        port,
        args.max_batch_size,
        args.max_queue,
        "API key required" if service.api_key else "no API key",
    )
    if not service.api_key and not _loopback(args.host):
        logger.warning("serve: --host %s without --api_key: anyone who can reach it can use it", args.host)
    level = "info" if logger.isEnabledFor(logging.DEBUG) else "warning"
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service), log_level=level, access_log=level == "info", timeout_graceful_shutdown=5
        )
    )
    # uvicorn shuts down gracefully on SIGINT / SIGTERM, then re-raises the signal: these handlers
    # take it, so a stopped server exits 0 instead of dying by the signal.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    service.scheduler.start()
    try:
        server.run(sockets=[sock])
    finally:
        service.scheduler.stop()
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("serve: stopped")
    return 0
