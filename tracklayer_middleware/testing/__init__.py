"""Test helpers for users of TrackLayer: a local fake of X's Conversions API.

See ``docs/testing.md``.
"""

from .fake_x import FakeResponse, FakeXConversionsAPI, RecordedRequest

__all__ = ["FakeResponse", "FakeXConversionsAPI", "RecordedRequest"]
