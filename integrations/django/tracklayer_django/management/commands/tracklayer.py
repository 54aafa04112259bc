"""``python manage.py tracklayer <command>``: the ``tracklayer`` CLI on this project's settings.

Every argument after ``tracklayer`` goes to the CLI unchanged (``status``, ``trace ID``,
``doctor``, ``worker``, ``--json``, ``--help`` ...), which runs on the site's settings.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandParser

from tracklayer_middleware.cli import EXIT_USAGE, main
from tracklayer_middleware.errors import ConfigurationError

from ...conf import conf

PROG = "manage.py tracklayer"


class Command(BaseCommand):
    """Thin wrapper: the real commands live in ``tracklayer_middleware.cli``."""

    help = "Inspect and operate TrackLayer delivery (status, trace, doctor, worker, ...)."
    requires_system_checks: list[str] = []  # the CLI reports configuration problems itself

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER, help="a tracklayer command")

    def run_from_argv(self, argv: list[str]) -> None:
        # Bypass Django's parser so --help, --json and every option reach the CLI's own.
        sys.exit(run(argv[2:], sys.stdout, sys.stderr))

    def handle(self, *args: str, **options: Any) -> None:
        # The CLI writes whole lines itself; Django's wrapper would add a newline per write.
        self.stdout.ending = self.stderr.ending = ""
        code = run(list(args), self.stdout, self.stderr)  # type: ignore[arg-type]
        if code:
            raise SystemExit(code)


def run(argv: list[str], stdout: TextIO, stderr: TextIO) -> int:
    """Run one CLI command on the site's settings; exit code as the ``tracklayer`` command's.

    The CLI gets settings, not the engine: looking at the queue must not start a sender here
    (``worker`` builds its own).
    """
    try:
        settings = conf.build()
    except ConfigurationError as exc:
        stderr.write(f"{PROG}: settings.TRACKLAYER is invalid (see `manage.py check`)\n")
        for problem in exc.problems:
            stderr.write(f"  - {problem}\n")
        return EXIT_USAGE
    return main(argv, settings=settings, prog=PROG, stdout=stdout, stderr=stderr)
