"""Fixtures shared by the whole test suite (keep additions small; several modules use it)."""

# The adversarial suite's reliability line at the end of every run (see tests/adversarial/).
pytest_plugins = ["tests.adversarial.summary"]
