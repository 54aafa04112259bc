"""Test helpers for users of TrackLayer."""
