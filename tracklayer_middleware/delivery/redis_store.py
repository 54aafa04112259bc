"""``RedisDeliveryStore``: the shared state of Celery delivery, in the broker's Redis.

One hash per conversion (``<prefix>:c:<pixel>:<event id>:<conversion id>``) holds its record
(hashes only), state, owner task, attempts, lease and last error. Beside it: the delivery log
(a list per conversion id), pixel pauses, the last failure per pixel, per-(event, state)
counters, and indexes (``due``/``waiting`` sorted sets, ``dead``/``paused`` sets) that make
``stats()``, ``flush()`` and ``retry-dead`` cheap. Every change of a conversion is one Lua
script, so state, counters and indexes move together and atomically across hosts. Keys
expire ``ttl_seconds`` after their last change.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..errors import OutboxError
from .log import DeliveryLogEntry
from .outbox import OutboxRow, PixelPause, State

if TYPE_CHECKING:
    from redis import Redis

KEY_PREFIX = "tracklayer"

# Shared by the scripts: keep a conversion's entries in the indexes in step with its state.
# KEYS: 1 conversion hash, 2 counts, 3 due (zset), 4 waiting (zset), 5 dead (set), 6 paused (set)
_INDEX = """
local function index(k, st)
  local v = redis.call('HMGET', k[1], 'next_attempt_at', 'created_at')
  -- In flight counts as due now (work is under way), not at its lease end: flush() must
  -- keep waiting for it rather than give up because the lease outlasts its timeout.
  if st == 'pending' or st == 'retrying' or st == 'in_flight' then
    redis.call('ZADD', k[3], tonumber(v[1]), k[1])
  else
    redis.call('ZREM', k[3], k[1])
  end
  if st == 'pending' or st == 'retrying' or st == 'in_flight' or st == 'paused' then
    redis.call('ZADD', k[4], tonumber(v[2]), k[1])
  else
    redis.call('ZREM', k[4], k[1])
  end
  if st == 'dead' then redis.call('SADD', k[5], k[1]) else redis.call('SREM', k[5], k[1]) end
  if st == 'paused' then redis.call('SADD', k[6], k[1]) else redis.call('SREM', k[6], k[1]) end
end
"""

# KEYS as _INDEX + 7 ids-of-this-conversion-id (set). ARGV[1]: JSON {fields, ttl}.
# A hash without ``published`` belongs to a task that may never have reached the broker (the
# enqueuer died or lost Redis in between): a new enqueue takes it over with its own task.
# Only the owner task sends, so even a late publish of the old task sends nothing.
_ADD = _INDEX + """
local a = cjson.decode(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HEXISTS', KEYS[1], 'published') == 1 or a.fields.task == '' then return 0 end
  if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
  redis.call('HSET', KEYS[1], 'task', a.fields.task, 'updated_at', a.fields.updated_at)
  redis.call('EXPIRE', KEYS[1], a.ttl)
  return 1
end
local flat = {}
for f, v in pairs(a.fields) do table.insert(flat, f); table.insert(flat, v) end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('HINCRBY', KEYS[2], a.fields.event .. '\\t' .. a.fields.state, 1)
index(KEYS, a.fields.state)
redis.call('SADD', KEYS[7], KEYS[1])
redis.call('EXPIRE', KEYS[1], a.ttl)
redis.call('EXPIRE', KEYS[7], a.ttl)
return 1
"""

# KEYS as _INDEX. ARGV[1]: JSON {task?, states?, due_at?, lease_owner?, set, set_if_missing?,
# ttl}. Applies ``set`` (cjson null deletes a field) only when every given condition holds.
_UPDATE = _INDEX + """
local a = cjson.decode(ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'state', 'task', 'next_attempt_at', 'lease_until',
                       'lease_owner', 'event')
local state = cur[1]
if not state then return 0 end
if a.task and cur[2] ~= a.task then return 0 end
if a.lease_owner and cur[5] ~= a.lease_owner then return 0 end
if a.states then
  local ok = false
  for _, s in ipairs(a.states) do if s == state then ok = true end end
  if not ok then return 0 end
end
if a.due_at then
  local due = tonumber(cur[3]) or 0
  if state == 'in_flight' then due = tonumber(cur[4]) or 0 end
  if due > a.due_at then return 0 end
end
for f, v in pairs(a.set) do
  if v == cjson.null then redis.call('HDEL', KEYS[1], f) else redis.call('HSET', KEYS[1], f, v) end
end
if a.set_if_missing then
  for f, v in pairs(a.set_if_missing) do redis.call('HSETNX', KEYS[1], f, v) end
end
local new = redis.call('HGET', KEYS[1], 'state')
if new ~= state then
  redis.call('HINCRBY', KEYS[2], cur[6] .. '\\t' .. state, -1)
  redis.call('HINCRBY', KEYS[2], cur[6] .. '\\t' .. new, 1)
end
index(KEYS, new)
redis.call('EXPIRE', KEYS[1], a.ttl)
return 1
"""

# KEYS as _ADD. ARGV[1]: the owner task id. Undoes _ADD when publishing the task failed.
_FORGET = _INDEX + """
local cur = redis.call('HMGET', KEYS[1], 'task', 'event', 'state')
if cur[1] ~= ARGV[1] then return 0 end
redis.call('HINCRBY', KEYS[2], cur[2] .. '\\t' .. cur[3], -1)
index(KEYS, 'forgotten')
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[7], KEYS[1])
return 1
"""

_ROW_FLOATS = ("created_at", "updated_at", "first_attempt_at", "next_attempt_at")


class RedisDeliveryStore:
    """The shared state of Celery delivery in one Redis (see the module docstring)."""

    def __init__(self, client: Redis, *, ttl_seconds: float, prefix: str = KEY_PREFIX) -> None:
        self.client = client
        self.ttl = max(1, int(ttl_seconds))
        self.prefix = prefix
        self._add = client.register_script(_ADD)
        self._update = client.register_script(_UPDATE)
        self._forget = client.register_script(_FORGET)

    def __repr__(self) -> str:
        return f"RedisDeliveryStore(prefix={self.prefix!r})"

    # ------------------------------------------------------------------ keys
    def conversion_key(self, pixel_id: str, event_id: str, conversion_id: str) -> str:
        """The hash of one (pixel, event id, conversion id)."""
        return f"{self.prefix}:c:{pixel_id}:{event_id}:{conversion_id}"

    def key_of(self, record: Mapping[str, Any]) -> str:
        """The hash key of a ``Conversion.to_record()``."""
        return self.conversion_key(record["pixel_id"], record["event_id"], record["conversion_id"])

    def _k(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def _index_keys(self, key: str) -> list[str]:
        return [key] + [self._k(n) for n in ("counts", "due", "waiting", "dead", "paused")]

    def _ids_key(self, conversion_id: str) -> str:
        return self._k(f"ids:{conversion_id}")

    # ------------------------------------------------------------------ rows
    def add(self, key: str, conversion_id: str, fields: Mapping[str, Any]) -> bool:
        """Create the conversion's hash unless it exists (or take over an unpublished one);
        True when the caller now owns it."""
        arg = json.dumps({"fields": _strings(fields), "ttl": self.ttl})
        keys = [*self._index_keys(key), self._ids_key(conversion_id)]
        with _redis_errors():
            return bool(self._add(keys=keys, args=[arg]))

    def mark_published(self, keys: Sequence[str], task_id: str) -> None:
        """Record that ``task_id`` reached the broker (its conversions can no longer be taken
        over by a new enqueue)."""
        arg = json.dumps({"set": {"published": "1"}, "task": task_id, "ttl": self.ttl})
        with _redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                self._update(keys=self._index_keys(key), args=[arg], client=pipe)
            pipe.execute()

    def forget(self, key: str, conversion_id: str, task_id: str) -> None:
        """Remove a hash ``add()`` created for ``task_id`` (its task was never published)."""
        keys = [*self._index_keys(key), self._ids_key(conversion_id)]
        with _redis_errors():
            self._forget(keys=keys, args=[task_id])

    def update(
        self,
        key: str,
        changes: Mapping[str, Any],
        *,
        task: str | None = None,
        states: Collection[str] | None = None,
        due_at: float | None = None,
        lease_owner: str | None = None,
        set_if_missing: Mapping[str, Any] | None = None,
    ) -> bool:
        """Apply ``changes`` (None deletes a field) when every given condition holds."""
        arg: dict[str, Any] = {"set": _strings(changes, keep_none=True), "ttl": self.ttl}
        if task is not None:
            arg["task"] = task
        if states is not None:
            arg["states"] = list(states)
        if due_at is not None:
            arg["due_at"] = due_at
        if lease_owner is not None:
            arg["lease_owner"] = lease_owner
        if set_if_missing:
            arg["set_if_missing"] = _strings(set_if_missing)
        with _redis_errors():
            return bool(self._update(keys=self._index_keys(key), args=[json.dumps(arg)]))

    def get(self, key: str) -> dict[str, str] | None:
        """The conversion's hash as strings, or None when unknown (or expired)."""
        with _redis_errors():
            raw = self.client.hgetall(key)
        return {_s(k): _s(v) for k, v in raw.items()} if raw else None

    def row(self, key: str, row_id: int = 0) -> OutboxRow | None:
        """The conversion's hash as an ``OutboxRow``."""
        h = self.get(key)
        if h is None:
            return None
        return OutboxRow(
            id=row_id, pixel_id=h["pixel_id"], event=h["event"], event_id=h["event_id"],
            conversion_id=h["conversion_id"], record=json.loads(h["record"]),
            state=h["state"], attempts=int(h.get("attempts", "0")),
            created_at=float(h["created_at"]), updated_at=float(h["updated_at"]),
            first_attempt_at=_float(h.get("first_attempt_at")),
            next_attempt_at=float(h["next_attempt_at"]), lease_owner=h.get("lease_owner"),
            last_status=int(h["last_status"]) if h.get("last_status") else None,
            last_code=h.get("last_code"), last_error=h.get("last_error"),
        )

    def scan_rows(self) -> Iterator[OutboxRow]:
        """Every conversion in the store (an incremental SCAN: fine for reports)."""
        with _redis_errors():
            keys = [_s(k) for k in self.client.scan_iter(match=f"{self.prefix}:c:*", count=1000)]
        for i, key in enumerate(keys):
            row = self.row(key, i)
            if row is not None:
                yield row

    def keys_of(self, conversion_id: str) -> list[str]:
        """Every hash key that uses this conversion id."""
        with _redis_errors():
            return sorted(_s(k) for k in self.client.smembers(self._ids_key(conversion_id)))

    def members(self, index: str) -> list[str]:
        """Keys in the ``dead`` or ``paused`` index."""
        with _redis_errors():
            return sorted(_s(k) for k in self.client.smembers(self._k(index)))

    # ------------------------------------------------------------------ log and pauses
    def log(self, entries: Sequence[DeliveryLogEntry]) -> None:
        """Append attempts to their conversion's log; remember the last failure per pixel."""
        if not entries:
            return
        with _redis_errors():
            pipe = self.client.pipeline(transaction=True)
            for e in entries:
                text = json.dumps(asdict(e), separators=(",", ":"))
                key = self._k(f"log:{e.conversion_id}")
                pipe.rpush(key, text)
                pipe.expire(key, self.ttl)
                if e.state in (State.RETRYING, State.DEAD, State.PAUSED):
                    pipe.hset(self._k("last_errors"), e.pixel_id, text)
            pipe.execute()

    def attempts(self, conversion_id: str) -> list[DeliveryLogEntry]:
        """The delivery log of a conversion id, oldest first."""
        with _redis_errors():
            raw = self.client.lrange(self._k(f"log:{conversion_id}"), 0, -1)
        return [_entry(json.loads(r)) for r in raw]

    def last_errors(self) -> dict[str, DeliveryLogEntry]:
        """The latest failed attempt per pixel."""
        with _redis_errors():
            raw = self.client.hgetall(self._k("last_errors"))
        return {_s(k): _entry(json.loads(v)) for k, v in raw.items()}

    def set_pause(self, pause: PixelPause) -> None:
        """Record (or replace) a pixel's pause, seen by every worker."""
        with _redis_errors():
            self.client.hset(self._k("pauses"), pause.pixel_id, json.dumps(asdict(pause)))

    def clear_pause(self, pixel_id: str) -> None:
        """Lift a pixel's pause."""
        with _redis_errors():
            self.client.hdel(self._k("pauses"), pixel_id)

    def pauses(self) -> dict[str, PixelPause]:
        """Every recorded pause, by pixel id."""
        with _redis_errors():
            raw = self.client.hgetall(self._k("pauses"))
        return {_s(k): PixelPause(**json.loads(v)) for k, v in raw.items()}

    # ------------------------------------------------------------------ aggregates
    def counts(self) -> dict[str, dict[str, int]]:
        """``{event: {state: n}}`` (conversions seen within the retention, by current state)."""
        with _redis_errors():
            raw = self.client.hgetall(self._k("counts"))
        result: dict[str, dict[str, int]] = {}
        for field, n in raw.items():
            event, _, state = _s(field).partition("\t")
            if int(n) > 0:
                result.setdefault(event, {})[state] = int(n)
        return result

    def unfinished(self) -> tuple[int, float | None]:
        """Conversions pending, in flight or retrying, and the earliest due moment."""
        with _redis_errors():
            count = int(self.client.zcard(self._k("due")))
            first = self.client.zrange(self._k("due"), 0, 0, withscores=True)
        return count, (float(first[0][1]) if first else None)

    def oldest_waiting(self) -> float | None:
        """``created_at`` of the oldest conversion not yet delivered."""
        with _redis_errors():
            first = self.client.zrange(self._k("waiting"), 0, 0, withscores=True)
        return float(first[0][1]) if first else None


@contextmanager
def _redis_errors() -> Iterator[None]:
    import redis

    try:
        yield
    except redis.RedisError as exc:
        raise OutboxError(
            f"the Celery delivery store (Redis) failed: {type(exc).__name__}: {exc}"
        ) from exc


def _strings(values: Mapping[str, Any], *, keep_none: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        if v is None:
            if keep_none:
                out[k] = None
        else:
            out[k] = repr(v) if isinstance(v, float) else str(v)
    return out


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def _entry(data: dict[str, Any]) -> DeliveryLogEntry:
    data["identifiers"] = tuple(data.get("identifiers") or ())
    return DeliveryLogEntry(**data)
