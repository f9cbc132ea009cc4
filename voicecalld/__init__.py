"""voicecalld: a self-hosted phone-call daemon for AI agents, built on Twisted."""

__version__ = "0.1.0"
