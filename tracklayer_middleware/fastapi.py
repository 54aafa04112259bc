"""FastAPI / Starlette helpers: the ``get_tracker`` dependency and an engine lifespan.

Only Starlette is imported (FastAPI stays optional)::

    from fastapi import Depends, FastAPI
    from starlette.middleware import Middleware
    from tracklayer_middleware import TrackLayer, TrackLayerMiddleware
    from tracklayer_middleware.fastapi import get_tracker, lifespan
    from tracklayer_middleware.tracker import Tracker

    tracklayer = TrackLayer(settings)
    app = FastAPI(
        middleware=[Middleware(TrackLayerMiddleware, engine=tracklayer)],
        lifespan=lifespan(tracklayer),
    )

    @app.post("/checkout")
    def checkout(tracker: Tracker = Depends(get_tracker)): ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
from starlette.requests import HTTPConnection

from .engine import TrackLayer
from .tracker import Tracker

TRACKER_SCOPE_KEY = "tracklayer.tracker"


def get_tracker(request: HTTPConnection) -> Tracker:
    """FastAPI dependency: this request's ``Tracker`` (``Depends(get_tracker)``).

    Raises ``RuntimeError`` naming the fix when ``TrackLayerMiddleware`` is not installed.
    """
    tracker = request.scope.get(TRACKER_SCOPE_KEY)
    if not isinstance(tracker, Tracker):
        raise RuntimeError(
            "No TrackLayer tracker on this request: add "
            "Middleware(TrackLayerMiddleware, engine=tracklayer) to the app's middleware."
        )
    return tracker


@asynccontextmanager
async def running(engine: TrackLayer, *, timeout: float | None = None) -> AsyncIterator[TrackLayer]:
    """Keep ``engine`` for the body of the ``async with``; at exit deliver what can be
    delivered within ``timeout`` (default ``shutdown_timeout``) and close it, off the loop.

    For apps with their own lifespan: ``async with running(tracklayer): yield``.
    """
    try:
        yield engine
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: engine.close(timeout))


def lifespan(
    engine: TrackLayer, *, timeout: float | None = None
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A ``lifespan=`` for FastAPI/Starlette that flushes and closes ``engine`` at shutdown.

    The engine starts sending on its own (a backlog left by a previous run included); the
    lifespan state gets ``tracklayer`` (``request.state.tracklayer``).
    """

    @asynccontextmanager
    async def tracklayer_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with running(engine, timeout=timeout):
            yield {"tracklayer": engine}

    return tracklayer_lifespan
