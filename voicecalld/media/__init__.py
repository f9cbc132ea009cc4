"""Media streams: codecs, pacing and provider stream protocols."""
