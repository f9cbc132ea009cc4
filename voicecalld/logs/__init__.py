"""
The daemon's log output: the catalog of stable codes, the one-line text and
JSON formats, and the flood summary that keeps a hostile peer from filling
the journal (docs/logs.md).
"""
