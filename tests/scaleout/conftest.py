"""Fixtures for the scale-out tests: real Redis and PostgreSQL started by ``.ci/services.sh``.

Connection URLs come from the environment, else from ``.ci/services.env`` (written by
``bash .ci/services.sh up``). A test whose server does not answer is skipped with the command
that starts it; ``.ci/run`` always starts them, so in CI these tests run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES_ENV = REPO / ".ci" / "services.env"
START_HINT = "start them with `bash .ci/services.sh up` (what .ci/run does)"


def service_env() -> dict[str, str]:
    """``.ci/services.env`` overlaid with the process environment (which wins)."""
    values: dict[str, str] = {}
    if SERVICES_ENV.exists():
        for line in SERVICES_ENV.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip()
    values.update({k: v for k, v in os.environ.items() if k.startswith(("TLTEST_", "PG"))})
    return values


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a live Redis on loopback, or skip."""
    import redis

    url = service_env().get("TLTEST_REDIS_URL", "redis://127.0.0.1:6390/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url} ({exc}); {START_HINT}")
    finally:
        client.close()
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[object]:
    """A fresh client on the test Redis (closed after the test)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    yield client
    client.close()


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """DSN of a live PostgreSQL on loopback whose user may create databases, or skip."""
    import psycopg

    dsn = service_env().get(
        "TLTEST_POSTGRES_DSN",
        "postgresql://tracklayer:tracklayer@127.0.0.1:5439/tracklayer",
    )
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL is not reachable at {dsn} ({exc}); {START_HINT}")
    return dsn
