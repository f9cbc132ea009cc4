"""Realtime (full-duplex speech-to-speech) calls: one model session per call."""
