"""A tiny Django shop wired to TrackLayer (see README.md)."""
