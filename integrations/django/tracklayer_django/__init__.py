"""Django integration for TrackLayer."""
