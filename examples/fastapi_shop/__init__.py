"""A tiny FastAPI shop wired to TrackLayer (see README.md)."""
