"""A tiny Flask shop wired to TrackLayer (see README.md)."""
