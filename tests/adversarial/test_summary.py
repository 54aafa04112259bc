"""The reliability line is computed from the reports, failures and known bugs shown."""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversarial.summary import DOUBLED, LEAKS, LOST, SERVER_ERRORS, ReliabilityTally


def report(nodeid: str, kind: str, outcome: str = "passed", when: str = "call",
           **counts: int) -> pytest.TestReport:
    props: list[tuple[str, Any]] = [("tl_kind", kind), *counts.items()]
    return pytest.TestReport(nodeid, ("f.py", 1, nodeid), {}, outcome, None, when,
                             user_properties=props)


def test_line_adds_up_cases_and_their_recorded_counts() -> None:
    tally = ReliabilityTally()
    for rep in (
        report("a::1", "adversarial_input", when="setup"),
        report("a::1", "adversarial_input"),
        report("a::1", "adversarial_input", when="teardown", **{SERVER_ERRORS: 0}),
        report("a::2", "adversarial_input", "failed", **{SERVER_ERRORS: 1}),
        report("b::1", "adversarial_fault", **{LOST: 0, DOUBLED: 0}),
        report("b::2", "adversarial_fault", "failed", **{LOST: 2, DOUBLED: 1}),
        report("c::1", "adversarial_leak", **{LEAKS: 0}),
        report("d::1", "unrelated"),
    ):
        tally.pytest_runtest_logreport(rep)
    assert tally.line() == (
        "bad inputs: 2 tried, 1 \N{MULTIPLICATION SIGN} 5xx (1 FAILED); "
        "faults: 1 survived, 2 lost, 1 doubled (1 FAILED); leaks: 0"
    )


def test_known_bugs_and_skips() -> None:
    tally = ReliabilityTally()
    xfailed = report("a::1", "adversarial_fault", "skipped")
    xfailed.wasxfail = "BUG: something"
    skipped = report("a::2", "adversarial_fault", "skipped", when="setup")
    for rep in (xfailed, skipped):
        tally.pytest_runtest_logreport(rep)
    assert tally.line().startswith("bad inputs: 0 tried")
    assert "faults: 0 survived, 0 lost, 0 doubled (1 known bug (xfail))" in tally.line()
