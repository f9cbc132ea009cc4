"""Voice: TTS, STT, replies and conversation turns."""
