"""Pytest plugin: turns the adversarial suite's outcomes into the reliability line.

Registered from ``tests/conftest.py`` so the line closes every run of ``make test``
(``bad inputs: N tried, 0 x 5xx; faults: N survived, 0 lost, 0 doubled; leaks: 0``, with a
multiplication sign for the x).

Every figure comes from what the tests actually saw. A test joins a tally by its marker
(``adversarial_input`` / ``adversarial_fault`` / ``adversarial_leak``); the counts it observed
(5xx answers and crashes, lost and doubled conversion ids, leaked secrets) travel in the test
report's ``user_properties`` under the ``tl_*`` names below, written by the fixtures of
``tests/adversarial/conftest.py``. Failed tests are shown next to the tally they belong to,
so a red case can never hide behind a green-looking line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

INPUT, FAULT, LEAK = "adversarial_input", "adversarial_fault", "adversarial_leak"
KINDS = (INPUT, FAULT, LEAK)
# user_properties names the fixtures record under.
SERVER_ERRORS, LOST, DOUBLED, LEAKS = "tl_5xx", "tl_lost", "tl_doubled", "tl_leaks"
_KIND = "tl_kind"
# A test's outcome, worst wins across setup/call/teardown.
_RANK = {"skipped": 0, "passed": 1, "xfailed": 2, "failed": 3}


@dataclass
class _Case:
    kind: str
    outcome: str = "skipped"
    counts: Counter[str] = field(default_factory=Counter)


class ReliabilityTally:
    """Collects adversarial test reports; ``line()`` renders the summary."""

    def __init__(self) -> None:
        self.cases: dict[str, _Case] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Under pytest-xdist this runs in the controller, with the workers' reports."""
        props = dict(report.user_properties)
        kind = props.get(_KIND)
        if kind not in KINDS:
            return
        case = self.cases.setdefault(report.nodeid, _Case(kind))
        outcome = _outcome(report)
        if _RANK[outcome] > _RANK[case.outcome]:
            case.outcome = outcome
        # Within one report the recorded counts add up; the phases' reports repeat them.
        seen: Counter[str] = Counter()
        for name, value in report.user_properties:
            if name in (SERVER_ERRORS, LOST, DOUBLED, LEAKS):
                seen[name] += int(value)
        for name, value in seen.items():
            case.counts[name] = max(case.counts[name], value)

    def _of(self, kind: str) -> tuple[Counter[str], Counter[str]]:
        outcomes: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        for case in self.cases.values():
            if case.kind == kind:
                outcomes[case.outcome] += 1
                counts.update(case.counts)
        return outcomes, counts

    def line(self) -> str:
        """The one-line summary; failures and known bugs are named next to their tally."""
        inputs, input_counts = self._of(INPUT)
        faults, fault_counts = self._of(FAULT)
        leaks, leak_counts = self._of(LEAK)
        tried = inputs["passed"] + inputs["failed"] + inputs["xfailed"]
        parts = [
            f"bad inputs: {tried} tried, {input_counts[SERVER_ERRORS]} \N{MULTIPLICATION SIGN} 5xx"
            + _trouble(inputs),
            f"faults: {faults['passed']} survived, {fault_counts[LOST]} lost, "
            f"{fault_counts[DOUBLED]} doubled" + _trouble(faults),
            f"leaks: {leak_counts[LEAKS]}" + _trouble(leaks),
        ]
        return "; ".join(parts)

    def by_file(self) -> list[str]:
        """One line per test file: how many cases of each kind ran there."""
        files: dict[str, Counter[str]] = {}
        for nodeid, case in self.cases.items():
            if case.outcome != "skipped":
                files.setdefault(nodeid.split("::")[0], Counter())[case.kind] += 1
        words = {INPUT: "bad inputs", FAULT: "faults", LEAK: "leak scans"}
        return [
            f"  {path}: " + ", ".join(f"{n} {words[kind]}" for kind, n in sorted(kinds.items()))
            for path, kinds in sorted(files.items())
        ]

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """Written after pytest's own "N passed" line, so it is the last thing a run shows."""
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if not self.cases or reporter is None:
            return
        reporter.write_sep("=", "tracklayer reliability (tests/adversarial)")
        if reporter.verbosity > 0:
            for row in self.by_file():
                reporter.write_line(row)
        reporter.write_line(self.line())


def _outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "passed"  # a strict XPASS comes as plain failed
    if report.failed:
        return "failed"
    if report.skipped:
        return "skipped"
    return "passed" if report.when == "call" else "skipped"


def _trouble(outcomes: Counter[str]) -> str:
    notes = []
    if outcomes["failed"]:
        notes.append(f"{outcomes['failed']} FAILED")
    if outcomes["xfailed"]:
        notes.append(f"{outcomes['xfailed']} known bug (xfail)")
    return f" ({', '.join(notes)})" if notes else ""


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(ReliabilityTally(), "tracklayer-reliability")


@pytest.hookimpl(tryfirst=True)  # before fixtures run, so a setup error is counted too
def pytest_runtest_setup(item: pytest.Item) -> None:
    for kind in KINDS:
        if item.get_closest_marker(kind) is not None:
            item.user_properties.append((_KIND, kind))
            break
