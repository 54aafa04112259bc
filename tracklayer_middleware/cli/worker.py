"""``tracklayer worker``: deliver the outbox in the foreground (for ``delivery="worker"``).

Run it under systemd / supervisor / a container next to web processes that only enqueue.
SIGTERM or Ctrl-C finishes the batch in flight, then exits; every other row stays in the
outbox for the next start. ``--once`` drains what is due now and exits (cron, CI, deploys).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from ..errors import ConfigurationError
from .output import EXIT_OK
from .status import collect_status, render_status

if TYPE_CHECKING:
    from .context import CommandContext


@contextlib.contextmanager
def progress_log(stream: TextIO) -> Iterator[None]:
    """Show each delivery attempt (the ``tracklayer.delivery`` log) on ``stream``, unless the
    host already configured logging for TrackLayer."""
    logger = logging.getLogger("tracklayer")
    if logger.handlers or logging.getLogger().handlers:
        yield
        return
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(ctx: CommandContext, *, stop: threading.Event | None = None) -> int:
    """Send until stopped (or, with ``--once``, until nothing is due)."""
    if ctx.settings.delivery == "celery":
        raise ConfigurationError(
            "delivery='celery' is sent by Celery workers: run `celery -A <your app> worker` "
            "(the task is tracklayer.deliver), not `tracklayer worker`."
        )
    # delivery="worker": this process's only sender is the foreground loop below.
    engine = ctx.engine(delivery="worker")
    settings = engine.settings
    stop = stop or threading.Event()
    mode = "DRY-RUN, nothing reaches X" if settings.dry_run else f"to {settings.endpoint_url}"
    ctx.say(f"tracklayer worker: outbox {settings.outbox}, {mode}")
    if not ctx.args.once:
        ctx.say("sending; SIGTERM or Ctrl-C stops after the batch in flight")
    with stop_on_signals(stop), progress_log(ctx.err):
        engine.run_worker(once=ctx.args.once, stop=stop)
    status = collect_status(engine.outbox, settings)
    ctx.emit(status, "worker stopped.\n" + render_status(status))
    return EXIT_OK
