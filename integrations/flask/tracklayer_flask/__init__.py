"""Flask integration for TrackLayer."""
