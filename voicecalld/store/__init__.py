"""The durable call store."""
