"""The AMP control protocol: commands, server, client."""
