"""The ``peekbot`` command line: run, chat, sandbox, tiny-model, doctor, bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from bot.redact import redact
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.app import Application

logger = logging.getLogger("peekbot")

DEMO_WARNING = (
    "Demo mode: this is a tiny model with RANDOM weights, built locally. Its answers are random text and only "
    "show the wiring (files → images → engine → streamed answer). For real answers set PEEKBOT_MODEL to a "
    "Qwen-VL model (e.g. Qwen/Qwen3-VL-4B-Instruct or a local directory) and drop --demo."
)


DEMO_MAX_PIXELS = 640 * 480
"""The largest picture the demo model looks at: a full-size screenshot or PDF page takes the tiny model minutes on a
CPU, and its answer is random either way."""


def _demo_model(settings: Settings) -> Path:
    from inference.tiny import build_tiny_model

    target = settings.core.data_dir / "demo-model" / "qwen3_vl"
    if not (target / "config.json").exists():
        print("Building the demo model once (a few seconds)…", file=sys.stderr)
        build_tiny_model(target, "qwen3_vl")
    return target


def _use_demo_model(settings: Settings) -> None:
    """``--demo``: the tiny random model (built once), short answers, and a warning that they are random."""
    settings.engine.model = str(_demo_model(settings))
    settings.engine.max_new_tokens = min(settings.engine.max_new_tokens, 64)  # random text: keep it short
    settings.engine.max_pixels = min(settings.engine.max_pixels, DEMO_MAX_PIXELS)  # a CPU reads small pictures fast
    print(DEMO_WARNING, file=sys.stderr)


def _chat_store(settings: Settings):  # type: ignore[no-untyped-def]
    """A terminal session keeps its own state file and never answers another session's unfinished questions."""
    from bot.store.sqlite import SQLiteStore

    data_dir = Path(settings.core.data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(data_dir / "chat.db", single_process=False)


async def _chat(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.console import OUTPUT_CLOSED, ConsoleAdapter
    from bot.wiring import build_application

    settings.core.http_port = 0  # a terminal session serves no health endpoints (and must not clash with `run`)
    console = ConsoleAdapter(settings)
    files = [*args.image, *args.file]
    question = " ".join(args.question).strip()
    missing = _missing_file(files)
    if missing is not None:  # said before the model loads, not after
        print(f"peekbot: {missing}", flush=True)
        return 1
    app = build_application(settings, adapters=[console], store=_chat_store(settings), resume_jobs=False)
    async with app:
        if question or files:
            reply = await console.ask(question, files)
            if reply.error == OUTPUT_CLOSED:
                _silence_stdout()
            return 0 if reply.error is None else 1
        return await _interactive(console)


def _missing_file(paths: list[str]) -> str | None:
    """The console's refusal of the first of ``paths`` that is no file, in the terminal's language; None when all
    are files (the same check the console makes when it reads them; nothing is read here)."""
    from adapters.console.adapter import ConsoleAdapter, terminal_locale
    from bot.errors import InputError
    from bot.i18n import lang_of_locale

    for path in paths:
        try:
            ConsoleAdapter.file_ref(path)
        except InputError as exc:
            return exc.text(lang_of_locale(terminal_locale()) or "en")
    return None


def _silence_stdout() -> None:
    """The reader of stdout went away: send what is still buffered nowhere, so leaving prints no traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


async def _interactive(console) -> int:  # type: ignore[no-untyped-def]
    from adapters.console import OUTPUT_CLOSED

    print("Ask about an image: '/image PATH' (or '/file PATH') attaches a file to your next question; "
          "/help lists commands; /quit or Ctrl-D leaves.", file=sys.stderr)
    pending: list[str] = []
    while True:
        try:
            line = await asyncio.to_thread(input, "you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line.startswith(("/image ", "/file ")):
            pending.append(line.split(" ", 1)[1].strip())
            print(f"(attached {pending[-1]}; now ask your question)", file=sys.stderr)
            continue
        reply = await console.ask(line, pending)
        if reply.error == OUTPUT_CLOSED:
            _silence_stdout()
            return 1
        pending = []


def _browser_available() -> bool:
    """A graphical browser can open (a terminal browser would take over this terminal)."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


async def _sandbox(settings: Settings, args: argparse.Namespace) -> int:
    from sandbox.runner import Sandbox

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not 0 <= args.port <= 65535:
        print(f"peekbot: --port {args.port} is not a port; use 1 to 65535 (or 0 for a free one).", file=sys.stderr)
        return 2
    sandbox = Sandbox(settings, port=args.port)
    try:
        await sandbox.start()
    except OSError as exc:
        if sandbox.page.port:  # the page was up: something else failed
            raise
        print(f"peekbot: cannot serve the sandbox on 127.0.0.1:{args.port} ({exc.strerror or exc}). Choose another "
              "port with --port (0 picks a free one).", file=sys.stderr)
        return 2
    try:
        print(f"peekbot sandbox: open {sandbox.url}/ in a browser (Ctrl-C stops it).", file=sys.stderr)
        if not args.no_browser and _browser_available():
            import webbrowser

            await asyncio.to_thread(webbrowser.open, f"{sandbox.url}/")
        await stop.wait()
    finally:
        await sandbox.stop()
    return 0


HARD_EXIT_MARGIN_S = 30.0
"""Once the application asked to be restarted, the process ends at the latest this long after the drain timeout."""


async def _until_stopped(stop: asyncio.Event, app: Application) -> None:
    """Until SIGTERM/SIGINT, or until the application asks to be restarted (its model worker hangs)."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(app.exit_requested.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _exit_now(code: int) -> NoReturn:
    """End the process at once: a thread hung in native code (the model's worker) can block the interpreter's own
    shutdown, which joins threads and tears CUDA down."""
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


def _exit_at_the_latest(delay_s: float, code: int) -> None:
    def expire() -> None:
        logger.error("stopping took longer than %.0f s; exiting now", delay_s)
        _exit_now(code)

    timer = threading.Timer(delay_s, expire)
    timer.daemon = True
    timer.start()


async def _run(settings: Settings) -> int:
    from bot.wiring import build_adapters, build_application, no_platform_message

    adapters = build_adapters(settings)  # every configured platform's plug-in
    if not adapters:
        print(f"peekbot: {no_platform_message()}", file=sys.stderr)
        return 2
    problem = _startup_problem(settings)
    if problem:
        print(f"peekbot: {problem}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.ExitStack() as stack:
        if not (settings.core.store_url or "").startswith("redis"):
            from bot.lock import DataDirBusy, exclusive_data_dir

            try:
                stack.enter_context(exclusive_data_dir(settings.core.data_dir))
            except DataDirBusy as exc:
                print(f"peekbot: {exc}", file=sys.stderr)
                return 2
        from scheduler.systemd import notify

        async with build_application(settings, adapters=adapters) as app:
            notify("READY=1", "STATUS=answering questions")  # the model is loaded and the platforms connected
            await _until_stopped(stop, app)
            if app.exit_code is not None:
                _exit_at_the_latest(settings.core.drain_timeout_s + HARD_EXIT_MARGIN_S, app.exit_code)
            notify("STOPPING=1")
            logger.info("shutting down: draining answers in flight")
    if app.exit_code is not None:
        logger.error("exiting with code %d for the supervisor to restart peekbot: %s", app.exit_code, app.unhealthy)
        _exit_now(app.exit_code)
    return 0


def _startup_problem(settings: Settings) -> str | None:
    """What keeps ``peekbot run`` from starting that can be seen before the model loads: the state directory, the
    health server's address."""
    from bot.doctor import data_dir_problem
    from bot.http import address_problem
    from bot.store import sqlite_path

    core = settings.core
    data_dir = Path(core.data_dir).expanduser()
    for directory, setting in ((data_dir, "PEEKBOT_DATA_DIR"),
                               ((sqlite_path(core.store_url, data_dir) or data_dir).parent, "PEEKBOT_STORE_URL")):
        problem = data_dir_problem(directory)
        if problem:
            return (f"the state directory {problem} ({setting}). Give this user write access to it, or point "
                    f"{setting} elsewhere.")
    return address_problem(core.http_host, core.http_port)


def _startup_failure(exc: BaseException) -> str | None:
    """The sentence for an error that stopped the start (a setting to fix), or None for anything else."""
    from bot.errors import StartupError

    if isinstance(exc, StartupError):
        return str(exc)
    redis_store = sys.modules.get("bot.store.redis")
    if redis_store is not None and isinstance(exc, redis_store.StoreUnavailable):
        return f"{str(exc).rstrip('.')}. Check PEEKBOT_STORE_URL and that Redis is running and reachable from here."
    return None


def _configuration_problem(settings: Settings) -> str | None:
    """Loads every settings layer (and makes its secrets known to the log filter); what is wrong, or None."""
    import tomllib

    from pydantic import ValidationError

    from adapters.registry import PLATFORMS, platform_sections
    from bot.redact import remember, secret_values
    from bot.settings import AccessSettings, CoreSettings, EngineSettings, ImageSettings, SchedulerSettings

    core = (CoreSettings, EngineSettings, ImageSettings, SchedulerSettings, AccessSettings)
    sections = {cls.__name__: cls for cls in (*core, *(platform.settings_class for platform in PLATFORMS))}
    try:
        for layer in ("core", "engine", "images", "scheduler", "access"):
            getattr(settings, layer)
        platform_sections(settings)  # every platform's, so that its secrets are masked too
        remember(secret_values(settings))
    except ValidationError as exc:
        model = sections.get(exc.title)
        prefix = str(model.model_config.get("env_prefix", "")) if model is not None else ""
        wrong = [f"{prefix}{'_'.join(str(part) for part in error['loc'])}".upper() + f": {error['msg']}"
                 for error in exc.errors(include_url=False, include_input=False)]
        return "the configuration is invalid: " + "; ".join(wrong)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return f"cannot read the configuration file (--config or PEEKBOT_CONFIG): {exc}"
    return None


def _doctor(settings: Settings) -> int:
    from bot.wiring import doctor_checks

    failures = 0
    for check in doctor_checks(settings):
        print(f"[{check.status:^4}] {check.name}: {check.detail}")
        failures += check.status == "FAIL"
    return 1 if failures else 0


def _bench(args: argparse.Namespace) -> int:
    from inference.bench import format_table, run_bench

    result = run_bench(args)  # also writes --json
    print(format_table(result))
    if args.json_path is not None:
        print(f"JSON written to {args.json_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peekbot", description="Answers questions about screenshots and PDFs.")
    parser.add_argument("--config", help="TOML file with settings (same keys as the environment variables)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("run", help="connect to every configured platform and answer questions")

    chat = commands.add_parser("chat", help="ask from the terminal (one question, or interactive)")
    chat.add_argument("question", nargs="*", help="the question; leave out for an interactive session")
    chat.add_argument("--image", action="append", default=[], metavar="FILE", help="an image to ask about")
    chat.add_argument("--file", action="append", default=[], metavar="FILE", help="a PDF (or image) to ask about")
    chat.add_argument("--demo", action="store_true", help="use a tiny random model (no GPU, no download)")

    from sandbox import DEFAULT_PORT

    sandbox = commands.add_parser("sandbox", help="try the bot in a browser, against an embedded Slack")
    sandbox.add_argument("--port", type=int, default=DEFAULT_PORT, help="the page's port on 127.0.0.1 (0: a free one)")
    sandbox.add_argument("--demo", action="store_true", help="use a tiny random model (no GPU, no download)")
    sandbox.add_argument("--no-browser", action="store_true", help="print the address, do not open a browser")

    tiny = commands.add_parser("tiny-model", help="build a tiny random Qwen-VL model for tests and demos")
    tiny.add_argument("directory")
    tiny.add_argument("--arch", choices=["qwen2_5_vl", "qwen3_vl"], default="qwen3_vl")

    commands.add_parser("doctor", help="check configuration, tokens, model and GPU")

    bench = commands.add_parser("bench", help="engine benchmark: batching engine vs one-at-a-time")
    from inference.bench import add_arguments

    add_arguments(bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings(config_file=args.config)
    problem = _configuration_problem(settings)
    if problem:
        print(f"peekbot: {redact(problem)}", file=sys.stderr)
        return 2
    from bot.logs import setup_logging

    terminal = args.command == "chat" and not args.verbose  # a person reads stderr: no library chatter
    quiet_default = "WARNING" if args.command == "chat" else settings.core.log_level
    setup_logging("DEBUG" if args.verbose else quiet_default, settings.core.log_format,
                  library_level="ERROR" if terminal else None)
    if args.command in ("chat", "run", "sandbox") and settings.core.backend == "transformers":
        from inference.loader import adopt_transformers_logging

        adopt_transformers_logging()

    if args.command == "tiny-model":
        from inference.tiny import build_tiny_model

        print(build_tiny_model(args.directory, args.arch))
        return 0
    if args.command == "doctor":
        return _doctor(settings)
    if args.command == "bench":
        return _bench(args)
    if args.command in ("chat", "sandbox"):
        from bot.doctor import data_dir_problem

        problem = data_dir_problem(Path(settings.core.data_dir).expanduser())
        if problem:
            print(f"peekbot: the state directory {problem} (PEEKBOT_DATA_DIR).", file=sys.stderr)
            return 2
        if args.demo:
            _use_demo_model(settings)
        if args.command == "chat":
            try:
                return asyncio.run(_chat(settings, args))
            except KeyboardInterrupt:
                return 130
    try:
        return asyncio.run(_sandbox(settings, args) if args.command == "sandbox" else _run(settings))
    except Exception as exc:
        failure = _startup_failure(exc)
        if failure is None:
            raise
        print(f"peekbot: {redact(failure)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
