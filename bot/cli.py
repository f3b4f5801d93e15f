"""The ``peekbot`` command line: run, chat, tiny-model, doctor, bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path

from bot.settings import Settings

logger = logging.getLogger("peekbot")

DEMO_WARNING = (
    "Demo mode: this is a tiny model with RANDOM weights, built locally. Its answers are random text and only "
    "show the wiring (files → images → engine → streamed answer). For real answers set PEEKBOT_MODEL to a "
    "Qwen-VL model (e.g. Qwen/Qwen3-VL-4B-Instruct or a local directory) and drop --demo."
)


def _demo_model(settings: Settings) -> Path:
    from inference.tiny import build_tiny_model

    target = settings.core.data_dir / "demo-model" / "qwen3_vl"
    if not (target / "config.json").exists():
        print("Building the demo model once (a few seconds)…", file=sys.stderr)
        build_tiny_model(target, "qwen3_vl")
    return target


def _chat_store(settings: Settings):  # type: ignore[no-untyped-def]
    """A terminal session keeps its own state file and never answers another session's unfinished questions."""
    from bot.store.sqlite import SQLiteStore

    data_dir = Path(settings.core.data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(data_dir / "chat.db", single_process=False)


async def _chat(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.console import ConsoleAdapter
    from bot.app import Application

    settings.core.http_port = 0  # a terminal session serves no health endpoints (and must not clash with `run`)
    console = ConsoleAdapter(settings)
    files = [*args.image, *args.file]
    question = " ".join(args.question).strip()
    async with Application(settings, adapters=[console], store=_chat_store(settings), resume_jobs=False):
        if question or files:
            reply = await console.ask(question, files)
            return 0 if reply.error is None else 1
        return await _interactive(console)


async def _interactive(console) -> int:  # type: ignore[no-untyped-def]
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
        await console.ask(line, pending)
        pending = []


async def _run(settings: Settings) -> int:
    from bot.app import Application, build_adapters

    adapters = build_adapters(settings)
    if not adapters:
        print("peekbot: no platform is configured. Set SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Slack), or "
              "FEISHU_APP_ID and FEISHU_APP_SECRET (Feishu/Lark). To try the bot locally: peekbot chat --demo",
              file=sys.stderr)
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
        async with Application(settings, adapters=adapters):
            await stop.wait()
            logger.info("shutting down: draining answers in flight")
    return 0


def _doctor(settings: Settings) -> int:
    from bot.doctor import run_checks

    failures = 0
    for check in run_checks(settings):
        print(f"[{check.status:^4}] {check.name}: {check.detail}")
        failures += check.status == "FAIL"
    return 1 if failures else 0


def _bench(args: argparse.Namespace) -> int:
    from inference.bench import format_table, run_bench

    result = run_bench(args)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"JSON written to {args.json}")
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
    from bot.logs import setup_logging

    quiet_default = "WARNING" if args.command == "chat" else settings.core.log_level
    setup_logging("DEBUG" if args.verbose else quiet_default, settings.core.log_format)

    if args.command == "tiny-model":
        from inference.tiny import build_tiny_model

        print(build_tiny_model(args.directory, args.arch))
        return 0
    if args.command == "doctor":
        return _doctor(settings)
    if args.command == "bench":
        return _bench(args)
    if args.command == "chat":
        if args.demo:
            settings.engine.model = str(_demo_model(settings))
            settings.engine.max_new_tokens = min(settings.engine.max_new_tokens, 64)  # random text: keep it short
            print(DEMO_WARNING, file=sys.stderr)
        try:
            return asyncio.run(_chat(settings, args))
        except KeyboardInterrupt:
            return 130
    return asyncio.run(_run(settings))


if __name__ == "__main__":
    sys.exit(main())
