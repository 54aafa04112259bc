"""status, trace, retry-dead, purge, report and worker against a real delivery history."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tracklayer_middleware.cli import main
from tracklayer_middleware.cli.config import load_settings
from tracklayer_middleware.engine import TrackLayer
from tracklayer_middleware.identity import hash_email
from tracklayer_middleware.testing import FakeXConversionsAPI

from .conftest import TOKEN
from .history import EMAIL, EXPECTED, build_history


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FakeXConversionsAPI]:
    return build_history(tmp_path_factory.mktemp("history"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_history_matches_what_x_received(history: tuple[Path, FakeXConversionsAPI]) -> None:
    _, fake = history
    assert fake.accepted_ids() == {"ord_1_purchase": 1, "lead_1": 1, "ord_2_purchase": 1}


def test_status_counts_equal_history(
    history: tuple[Path, FakeXConversionsAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = history
    code, out = run(capsys, "status", "--json", "--config", str(config))
    assert code == 1  # dead and paused rows need a person
    status = json.loads(out)
    assert {e: {s: n for s, n in c.items() if n} for e, c in status["by_event"].items()} == EXPECTED
    assert status["by_state"]["sent"] == 3
    assert status["pause_kind"] == {"o1a2b": "auth"}
    assert status["last_error"]["o1a2b"]["http_status"] == 401
    code, text = run(capsys, "status", "--config", str(config))
    assert "PAUSED pixel o1a2b (auth)" in text
    assert "skipped_consent" in text and "total" in text


def test_trace_of_retried_purchase(
    history: tuple[Path, FakeXConversionsAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = history
    code, out = run(capsys, "trace", "ord_2_purchase", "--config", str(config))
    assert code == 0
    assert "HTTP 503" in out and "sent" in out
    assert "payload" in out and "twclid=29q0w6g2k2m4a" in out
    code, out = run(capsys, "trace", "ord_1_purchase", "--json", "--config", str(config))
    trace = json.loads(out)["traces"][0]
    assert trace["state"] == "sent"
    email_hash = trace["payload"]["identifiers"][1]["hashed_email"]
    assert email_hash.endswith("…" + email_hash[-4:]) and len(email_hash) < 20
    assert EMAIL.lower() not in out
    assert hash_email(EMAIL) not in out  # hashes are only ever shown shortened
    _, text = run(capsys, "trace", "ord_1_purchase", "--config", str(config))
    assert hash_email(EMAIL) not in text and hash_email(EMAIL)[:8] in text


def test_trace_of_dead_and_paused_give_hints(
    history: tuple[Path, FakeXConversionsAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = history
    _, out = run(capsys, "trace", "ord_bad_purchase", "--config", str(config))
    assert "dead" in out and "HTTP 400" in out and "retry-dead" in out
    _, out = run(capsys, "trace", "ord_3_purchase", "--config", str(config))
    assert "paused" in out and "Rotate the token" in out
    _, out = run(capsys, "trace", "lead_2", "--config", str(config))
    assert "consent" in out


def test_trace_unknown_exits_1(
    history: tuple[Path, FakeXConversionsAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = history
    code, out = run(capsys, "trace", "nope", "--config", str(config))
    assert code == 1 and "no conversion 'nope'" in out


def test_report_shares_and_advice(
    history: tuple[Path, FakeXConversionsAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = history
    code, out = run(capsys, "report", "--since", "1d", "--json", "--config", str(config))
    report = json.loads(out)
    purchase, lead = report["events"]["purchase"], report["events"]["lead"]
    assert purchase["total"] == 4 and purchase["with_twclid"] == 3
    assert purchase["with_email"] == 2 and purchase["dead"] == 1
    assert purchase["dead_by_code"] == {"INVALID_PARAMETER": 1}
    assert purchase["sent"] == 2 and purchase["retried"] == 1  # ord_2: 503, then accepted
    assert lead["total"] == 3 and lead["with_twclid"] == 0 and lead["skipped_consent"] == 1
    assert lead["with_none"] == 1
    assert code == 1
    lead_advice = [a["advice"] for a in report["advice"] if a["event"] == "lead"]
    assert any("Weak match quality" in a for a in lead_advice)
    _, text = run(capsys, "report", "--config", str(config))
    assert "twclid" in text and "Weak match quality" in text


def test_report_window_excludes_older(
    history: tuple[Path, FakeXConversionsAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = history
    code, out = run(capsys, "report", "--since", "2999-01-01", "--json", "--config", str(config))
    assert code == 0 and json.loads(out)["events"] == {}


def test_retry_dead_and_purge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = build_history(tmp_path)
    _, out = run(capsys, "retry-dead", "--dry-run", "--json", "--config", str(config))
    assert json.loads(out)["would_retry"] == 1
    _, out = run(capsys, "retry-dead", "--since", "2999-01-01", "--config", str(config))
    assert "no dead conversion matches" in out
    _, out = run(capsys, "retry-dead", "--event", "purchase", "--json", "--config", str(config))
    assert json.loads(out)["retried"] == 1

    _, out = run(capsys, "purge", "--sent-before", "2000-01-01", "--json",
                    "--config", str(config))
    assert json.loads(out)["purged"] == 0
    _, out = run(capsys, "purge", "--sent-before", "2999-01-01", "--dry-run", "--json",
                    "--config", str(config))
    assert json.loads(out)["would_purge"] == 5  # 3 sent + 2 skipped
    _, out = run(capsys, "purge", "--sent-before", "2999-01-01", "--json",
                    "--config", str(config))
    assert json.loads(out)["purged"] == 5
    _, out = run(capsys, "status", "--json", "--config", str(config))
    left = json.loads(out)["by_state"]
    assert {s: n for s, n in left.items() if n} == {"pending": 1, "paused": 1}


def test_worker_once_delivers_retried_dead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = build_history(tmp_path)
    assert main(["retry-dead", "--config", str(config)]) == 0
    assert main(["resume", "--config", str(config)]) == 0  # the token was rotated
    monkeypatch.setenv("X_ADS_BEARER_TOKEN", TOKEN)
    with FakeXConversionsAPI(pixel_ids=["o1a2b"], token=TOKEN) as fake:
        monkeypatch.setenv("TRACKLAYER_API_BASE_URL", fake.base_url)
        capsys.readouterr()
        code = main(["worker", "--once", "--config", str(config)])
        out = capsys.readouterr().out
        assert code == 0 and "worker stopped" in out
        assert fake.accepted_ids() == {"ord_bad_purchase": 1, "ord_3_purchase": 1}


def test_worker_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    config, _ = build_history(tmp_path)
    assert main(["retry-dead", "--config", str(config)]) == 0
    assert main(["resume", "--config", str(config)]) == 0
    with FakeXConversionsAPI(pixel_ids=["o1a2b"], token=TOKEN) as fake:
        env = {**os.environ, "X_ADS_BEARER_TOKEN": TOKEN,
               "TRACKLAYER_API_BASE_URL": fake.base_url}
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "tracklayer_middleware", "worker",
             "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # blocks on the worker's own progress lines
                if "SIGTERM" in line:
                    break
            assert fake.wait_for(2, timeout=10)
            proc.send_signal(signal.SIGTERM)
            rest = proc.communicate(timeout=20)[0]
        finally:
            proc.kill()
    assert proc.returncode == 0
    assert "worker stopped" in rest
    assert "ord_bad_purchase (purchase, pixel o1a2b) attempt 1: sent" in rest  # progress
    assert fake.accepted_ids() == {"ord_bad_purchase": 1, "ord_3_purchase": 1}


def test_resume_lifts_the_auth_pause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = build_history(tmp_path)
    code, out = run(capsys, "resume", "--json", "--config", str(config))
    assert code == 0 and json.loads(out)["resumed"] == {"o1a2b": 1}
    _, out = run(capsys, "status", "--json", "--config", str(config))
    status = json.loads(out)
    assert status["paused"] == {} and status["by_state"]["pending"] == 1
    _, out = run(capsys, "resume", "--config", str(config))
    assert "no pixel is paused" in out


def test_status_watch_repeats_until_stopped(
    history: tuple[Path, FakeXConversionsAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    from tracklayer_middleware.cli import build_parser, status
    from tracklayer_middleware.cli.context import CommandContext

    config, _ = history
    args = build_parser().parse_args(["status", "--watch", "0.2", "--config", str(config)])
    out = io.StringIO()
    ctx = CommandContext(args, out, io.StringIO())
    stop = threading.Event()
    stop.set()  # one round, then the wait returns at once
    try:
        assert status.run(ctx, stop=stop) == 1
    finally:
        ctx.close()
    assert out.getvalue().count("oldest waiting") == 1
    args = build_parser().parse_args(["status", "--watch", "--json", "--config", str(config)])
    out = io.StringIO()
    ctx = CommandContext(args, out, io.StringIO())
    try:
        status.run(ctx, stop=stop)
    finally:
        ctx.close()
    (line,) = out.getvalue().splitlines()  # JSON Lines: one document per refresh
    assert json.loads(line)["by_state"]["sent"] == 3


def test_status_in_dry_run(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(environment="staging")
    settings = load_settings(config, environ={})
    engine = TrackLayer(settings)
    try:
        engine.convert("purchase", conversion_id="ord_dry", value=1.0, attribution="abc123")
        assert engine.flush(10)
    finally:
        engine.close(1)
    code, out = run(capsys, "status", "--json", "--config", str(config))
    status = json.loads(out)
    assert code == 0 and status["dry_run"] is True
    assert status["by_event"] == {"purchase": {"dry_run": 1}}
    _, text = run(capsys, "status", "--config", str(config))
    assert "DRY-RUN" in text


def test_worker_refuses_celery_delivery(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(delivery="celery", celery_broker_url="redis://127.0.0.1:1/0")
    assert main(["worker", "--once", "--config", str(config)]) == 2
    assert "celery" in capsys.readouterr().err


def test_framework_shells_pass_their_engine(capsys: pytest.CaptureFixture[str]) -> None:
    """`flask tracklayer` / `manage.py tracklayer` call main(argv, engine=...)."""
    engine = TrackLayer({"pixel_id": "o1a2b", "secret_key": "x" * 8 + "-shell-key-0123456789",
                         "events": {"lead": "o87nf"}, "outbox": "memory",
                         "environment": "development"})
    try:
        engine.convert("lead", conversion_id="lead_shell", attribution="abc123")
        assert engine.flush(5)
        assert main(["status", "--json"], engine=engine, prog="flask tracklayer") == 0
        assert json.loads(capsys.readouterr().out)["by_event"] == {"lead": {"dry_run": 1}}
        assert main(["trace", "lead_shell"], engine=engine) == 0
        assert "lead_shell: dry_run" in capsys.readouterr().out
    finally:
        engine.close(1)
