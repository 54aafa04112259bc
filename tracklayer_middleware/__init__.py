"""TrackLayer: server-side X Conversions API delivery."""
