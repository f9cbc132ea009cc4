"""Deep merge of JSON objects, with upstream's rules."""

from __future__ import annotations

from typing import Any

# Keys that mean something to JavaScript object prototypes; upstream drops them
# at any depth, so a config that works here also works in the gateway.
_DROPPED = frozenset({"__proto__", "prototype", "constructor"})


def deep_merge(base: Any, override: Any) -> Any:
    """
    Merge C{override} over C{base}: objects merge key by key, recursively;
    lists and scalars in C{override} replace those in C{base}.
    """
    if isinstance(base, dict) and isinstance(override, dict):
        merged = {k: _clean(v) for k, v in base.items() if k not in _DROPPED}
        for key, value in override.items():
            if key in _DROPPED:
                continue
            merged[key] = deep_merge(merged.get(key), value) if key in merged else _clean(value)
        return merged
    return _clean(override)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in _DROPPED}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
