"""Calls: records, the lifecycle table, events, notices and the manager."""
