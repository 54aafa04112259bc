"""The Django database outbox on real databases: PostgreSQL (and SQLite, the fallback).

Django is configured once per process, so each scenario runs in a fresh process
(``tests/scaleout/djangoproj/scenarios.py``) against a database made for the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tracklayer_middleware.testing import FakeXConversionsAPI

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = "tests.scaleout.djangoproj.scenarios"


class Project:
    """The test Django project on one database."""

    def __init__(self, database: str, fake_x: FakeXConversionsAPI) -> None:
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DJANGO_SETTINGS_MODULE": "tests.scaleout.djangoproj.settings",
            "TLTEST_DATABASE": database,
            "TLTEST_X_URL": fake_x.base_url,
        }

    def run(self, *args: str) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-m", SCENARIOS, *args], cwd=REPO, env=self.env,
                              capture_output=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        return json.loads(proc.stdout.decode().splitlines()[-1])

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", SCENARIOS, *args], cwd=REPO,
                                env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


@pytest.fixture
def postgres_db(postgres_dsn: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"tl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["postgres", "sqlite"])
def project(request: pytest.FixtureRequest, fake_x: FakeXConversionsAPI,
            tmp_path: Path) -> Project:
    if request.param == "postgres":
        database = request.getfixturevalue("postgres_db")
    else:
        database = str(tmp_path / "shop.sqlite3")
    p = Project(database, fake_x)
    p.run("migrate")
    return p


def test_conversion_commits_and_rolls_back_with_its_order(
    project: Project, fake_x: FakeXConversionsAPI
) -> None:
    result = project.run("checkout")
    assert result["orders"] == ["B2"]
    assert result["rows"] == [["B2_purchase", "sent"]]  # A1 rolled back: no row, never sent
    assert result["wakes"] == [0, 1]  # the sender is woken by the commit, not the rollback
    assert result["drained"] is True
    assert fake_x.accepted_ids() == Counter({"B2_purchase": 1})


def run_together(project: Project, n: int, *args: str) -> list[dict[str, Any]]:
    """Start ``n`` scenario processes, release them at once when all are ready, collect."""
    procs = [project.start(*args) for _ in range(n)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, err[-3000:]
            results.append(json.loads(out.splitlines()[-1]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)


def test_four_concurrent_claimers_never_claim_a_row_twice(project: Project) -> None:
    assert project.run("seed", "200") == {"rows": 200}
    results = run_together(project, 4, "claim", "3")
    claimed = Counter(cid for r in results for cid in r["claimed"])
    assert set(claimed) == {f"seed_{i}" for i in range(200)}
    assert max(claimed.values()) == 1, [c for c, n in claimed.items() if n > 1]
    assert sum(1 for r in results if r["claims"]) >= 2  # the claims really interleaved


def test_three_web_processes_sending_from_one_table_deliver_each_conversion_once(
    project: Project, fake_x: FakeXConversionsAPI
) -> None:
    assert project.run("seed", "150") == {"rows": 150}
    results = run_together(project, 3, "drain")
    assert results == [{"drained": True}] * 3
    assert fake_x.accepted_ids() == Counter({f"seed_{i}": 1 for i in range(150)})


def test_the_django_outbox_keeps_the_sqlite_outbox_semantics(
    project: Project, tmp_path: Path
) -> None:
    result = project.run("parity", str(tmp_path / "reference.sqlite3"))
    assert result["django"] == result["sqlite"]


def test_a_dropped_database_connection_costs_one_call_not_the_sender(
    postgres_db: str, fake_x: FakeXConversionsAPI
) -> None:
    project = Project(postgres_db, fake_x)
    project.run("migrate")
    result = project.run("reconnect")
    assert "the Django outbox database failed" in result["first"]
    assert result["then"] == {}


def test_admin_lists_dead_conversions_and_retries_them(project: Project) -> None:
    result = project.run("admin_retry")
    assert result["listing"] == 200 and result["listed"] == [True, True]
    assert result["action"] == 200
    assert "2 dead conversion(s) will be sent again" in result["page"]
    assert result["states"] == [["pending", 0], ["pending", 0]]
