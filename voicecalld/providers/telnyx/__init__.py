"""Telnyx Call Control v2: REST, Ed25519-signed webhooks and bidirectional media streaming."""
