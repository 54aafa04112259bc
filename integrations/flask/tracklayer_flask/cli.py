"""``flask tracklayer <command>``: the ``tracklayer`` CLI, run on the app's own engine."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from tracklayer_middleware.cli import main


@click.command(
    "tracklayer",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def tracklayer_command(args: tuple[str, ...]) -> None:
    """Inspect and operate TrackLayer delivery: status, trace, doctor, worker, ..."""
    # Settings, not the engine: looking at the queue must not start a sender in this process.
    settings = current_app.extensions["tracklayer"].settings
    raise SystemExit(main(list(args), settings=settings, prog="flask tracklayer"))
