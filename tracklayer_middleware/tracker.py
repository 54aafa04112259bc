"""``Tracker``: the conversions one request makes, queued until its response is over.

The middleware builds one tracker per request (``engine.tracker(...)``) and makes it the
``current_tracker()`` for the request's context; a view calls ``tracker.convert(...)``, which
validates at once and queues. The middleware hands the queue to the engine only after the
response was fully sent with a status below 500 (see ``gateway.RequestGateway.finish``).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from .attribution import Attribution
from .consent import Consent
from .conversion import Conversion, build_conversion
from .errors import ConversionError

if TYPE_CHECKING:
    from .engine import TrackLayer

logger = logging.getLogger("tracklayer.tracker")

_UNKNOWN = Consent()
_current: ContextVar[Tracker | None] = ContextVar("tracklayer_tracker", default=None)


def current_tracker() -> Tracker | None:
    """The tracker of the request being handled here, or ``None`` outside a request.

    Context variables are copied into threadpools (Starlette's sync views) and tasks, so this
    works in sync and async code alike.
    """
    return _current.get()


def activate(tracker: Tracker) -> Token[Tracker | None]:
    """Make ``tracker`` the ``current_tracker()`` (middleware use); undo with ``deactivate``."""
    return _current.set(tracker)


def deactivate(token: Token[Tracker | None]) -> None:
    """Undo ``activate``. A token from another context (a server that closes a WSGI response
    in another thread) is ignored: that context is gone with its thread anyway."""
    try:
        _current.reset(token)
    except ValueError:
        logger.debug("tracker context already left; nothing to reset")


class Tracker:
    """Request-scoped conversion tracker; reach it as ``request.tracker`` or ``current_tracker()``.

    ``attribution`` is the click context read from the visitor's cookie (or captured by this
    very request), ``consent`` the visitor's consent as known now. ``convert()`` never does
    I/O while the request runs; ``pending`` shows what is queued.
    """

    __slots__ = (
        "__weakref__",
        "_announce",
        "_attribution",
        "_closed",
        "_consent",
        "_engine",
        "_pending",
        "_request",
        "_token",
    )

    def __init__(
        self,
        engine: TrackLayer,
        *,
        attribution: Attribution | None = None,
        consent: Consent | None = None,
        request: Any = None,
        announce: bool = False,
    ) -> None:
        self._engine = engine
        self._announce = announce
        self._attribution = attribution
        self._consent = consent if consent is not None else _UNKNOWN
        self._request = request
        self._pending: dict[tuple[str, str], Conversion] | None = None
        self._token: str | None = None
        self._closed = False

    @property
    def attribution(self) -> Attribution | None:
        """The click context of this visitor, or ``None`` for non-paid traffic (read-only)."""
        return self._attribution

    @property
    def attribution_token(self) -> str | None:
        """A signed token of ``attribution`` to store on an order, or ``None`` without a click.

        A later job converts with ``tracklayer.convert(..., attribution=token)``.
        """
        if self._attribution is None:
            return None
        if self._token is None:
            self._token = self._engine.codec.dumps_token(self._attribution)
        return self._token

    @property
    def consent(self) -> Consent:
        """The visitor's consent: the cookie's, updated by the site's ``consent_resolver``."""
        return self._consent

    @property
    def request(self) -> Any:
        """The framework's request object this tracker belongs to, when the shell gave one."""
        return self._request

    @property
    def has_pending(self) -> bool:
        """Whether anything is queued (cheaper than ``pending`` on the request path)."""
        return bool(self._pending)

    @property
    def pending(self) -> tuple[Conversion, ...]:
        """The conversions queued by this request, in call order."""
        return () if self._pending is None else tuple(self._pending.values())

    def convert(self, event: str, **fields: Any) -> Conversion:
        """Validate a conversion now, queue it for after the response, and return it.

        ``fields`` are ``build_conversion``'s (``conversion_id=``, ``value=``, ``currency=``,
        ``email=``, ``phone=``, ``external_id=``, ...); this visitor's click and consent are
        attached (a ``consent=`` given here, e.g. from a checkout checkbox, updates the
        latter). Raises ``ConversionError`` on invalid input. A second call with the same
        event and ``conversion_id`` in one request is a logged no-op returning the first.
        With ``enabled=False`` the conversion is validated but not queued.
        """
        if "attribution" in fields or "attribution_note" in fields:
            raise ConversionError(
                "tracker.convert() attaches this visitor's click itself; to convert another "
                "click use tracklayer.convert(..., attribution=token_or_twclid).",
                field="attribution",
            )
        given: Consent | None = fields.pop("consent", None)
        settings = self._engine.settings
        conversion = build_conversion(
            settings,
            event,
            attribution=self._attribution,
            consent=self._consent if given is None else self._consent.merged(given),
            attribution_note="cookie" if self._attribution is not None else None,
            **fields,
        )
        if not settings.enabled:
            logger.debug("tracklayer disabled: %s %s not queued", event, conversion.conversion_id)
            return conversion
        if self._closed:
            # The response is over (a thread the view started converts late): hand off at once.
            self._engine.handoff((conversion,))
            return conversion
        key = (conversion.event_id, conversion.conversion_id)
        if self._pending is None:
            self._pending = {}
            if self._announce:
                # flush() must wait for this request's hand-off, even once it has answered.
                self._engine.expect_handoff(self)
        first = self._pending.get(key)
        if first is not None:
            logger.info(
                "duplicate convert(%r, conversion_id=%r) in one request ignored",
                event,
                conversion.conversion_id,
            )
            return first
        self._pending[key] = conversion
        return conversion

    def take(self) -> tuple[Conversion, ...]:
        """Return the queued conversions and empty the queue (middleware use)."""
        if self._pending is None:
            return ()
        pending = tuple(self._pending.values())
        self._pending = None
        return pending

    def close(self) -> tuple[Conversion, ...]:
        """End the request: ``take()`` the queue; later ``convert()`` calls hand off at once."""
        self._closed = True
        return self.take()

    def __repr__(self) -> str:
        clicked = "yes" if self._attribution is not None else "no"
        return (
            f"<Tracker click={clicked} consent={self._consent.to_json()} "
            f"pending={len(self._pending or ())}>"
        )
