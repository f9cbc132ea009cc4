"""
Values only: call records, states, events, notices and playback results.

Everything here is a small immutable value with no behaviour beyond
converting itself to and from JSON, and imports nothing else of voicecalld,
so every other package (calls, providers, media, voice, control) can share
these without import cycles.
"""
