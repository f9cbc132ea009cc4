"""voicecalld tests."""
