"""Plivo Voice API: REST, signed callbacks, Plivo XML and audio streams."""
