"""The voicecall command line."""
