"""The webhook HTTP server: resource tree and security."""
