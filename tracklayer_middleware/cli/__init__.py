"""The ``tracklayer`` command: demo, status, trace, retry-dead, purge, resume, doctor, worker,
report.

``main(argv)`` is the one entry point: the console script, ``python -m tracklayer_middleware``,
``flask tracklayer ...`` and ``python manage.py tracklayer ...`` all call it; the framework
shells pass their own ``settings`` (or a running ``engine``) instead of a config file.

Exit codes: 0 ok, 1 problems found (doctor failed, conversion not found, dead rows, ...),
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, TextIO

from ..errors import ConfigurationError, TrackLayerError
from .output import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, parse_moment

if TYPE_CHECKING:
    from ..engine import TrackLayer
    from ..settings import TrackLayerSettings
    from .context import CommandContext

__all__ = ["EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "build_parser", "main"]


def build_parser(prog: str = "tracklayer") -> argparse.ArgumentParser:
    """The argument parser (exposed so framework shells can show the same help)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a flag given before the command must survive the subparser's defaults.
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="settings file (TOML or the guide's JSON); "
                        "default: $TRACKLAYER_CONFIG, else TRACKLAYER_* env vars")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")

    parser = argparse.ArgumentParser(
        prog=prog,
        parents=[common],
        description="Server-side X Conversions API delivery: inspect, repair and demo.",
        epilog="Exit codes: 0 ok, 1 problems found, 2 usage or configuration error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    demo = command("demo", "the whole story against a local fake X, no account needed")
    demo.add_argument("--serve", action="store_true",
                      help="keep the shop and a status page running until Ctrl-C")
    demo.add_argument("--port", type=int, default=8000, help="port for --serve (default 8000)")

    status = command("status", "counts by state and event, oldest pending, last errors")
    status.add_argument("--watch", nargs="?", type=float, const=2.0, default=None,
                        metavar="SECONDS", help="refresh every SECONDS (default 2) until Ctrl-C")

    trace = command("trace", "the whole life of one conversion")
    trace.add_argument("conversion_id")

    retry = command("retry-dead", "move dead conversions back to pending")
    retry.add_argument("--event", help="only this canonical event (e.g. purchase)")
    retry.add_argument("--since", type=_moment, metavar="T",
                       help="only rows that died after T (ISO date or age like 7d)")
    retry.add_argument("--dry-run", action="store_true", help="show what would be retried")

    purge = command("purge", "delete sent (and skipped) rows older than T")
    purge.add_argument("--sent-before", type=_moment, required=True, metavar="T",
                       help="ISO date or age like 30d")
    purge.add_argument("--dry-run", action="store_true", help="show what would be deleted")

    resume = command("resume", "lift a pixel's pause now (after rotating the token)")
    resume.add_argument("--pixel", help="only this pixel id (default: every paused pixel)")

    doctor = command("doctor", "check the configuration against the guide's troubleshooting list")
    doctor.add_argument("--probe", action="store_true",
                        help="send one harmless request (empty conversions list) to X")
    doctor.add_argument("--strict", action="store_true", help="warnings also exit 1")

    worker = command("worker", "send queued conversions in the foreground (delivery='worker')")
    worker.add_argument("--once", action="store_true", help="drain what is due now, then exit")

    report = command("report", "match quality per event: twclid, email, phone, consent, dead")
    report.add_argument("--since", type=_moment, default="7d", metavar="T",
                        help="window start: ISO date or age (default 7d)")
    report.add_argument("--event", help="only this canonical event")
    return parser


def _moment(text: str) -> object:
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(
    argv: Sequence[str] | None = None,
    *,
    settings: TrackLayerSettings | None = None,
    engine: TrackLayer | None = None,
    prog: str = "tracklayer",
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one ``tracklayer`` command and return its exit code (never calls ``sys.exit``).

    ``settings`` / ``engine`` come from a framework shell; otherwise settings are loaded from
    ``--config``, ``$TRACKLAYER_CONFIG`` or ``TRACKLAYER_*`` env vars.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    from .context import CommandContext

    ctx = CommandContext(args, out, err, given_settings=settings, given_engine=engine)
    try:
        return _COMMANDS[args.command](ctx)
    except ConfigurationError as exc:
        err.write(f"{prog}: configuration error\n")
        for problem in exc.problems:
            err.write(f"  - {problem}\n")
        return EXIT_USAGE
    except TrackLayerError as exc:
        err.write(f"{prog}: {exc}\n")
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130
    finally:
        ctx.close()


def _lazy(module: str) -> Callable[[CommandContext], int]:
    # Commands import their module on use: `tracklayer status` must not import the demo app.
    def run(ctx: CommandContext) -> int:
        command: Callable[[CommandContext], int] = import_module(f"{__name__}.{module}").run
        return command(ctx)

    return run


_COMMANDS: dict[str, Callable[[CommandContext], int]] = {
    "demo": _lazy("demo"),
    "status": _lazy("status"),
    "trace": _lazy("trace"),
    "retry-dead": _lazy("maintenance"),
    "purge": _lazy("maintenance"),
    "resume": _lazy("maintenance"),
    "doctor": _lazy("doctor"),
    "worker": _lazy("worker"),
    "report": _lazy("report"),
}
