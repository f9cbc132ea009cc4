"""
What OpenClaw itself keeps at the top of its config file.

The keys of C{OpenClawSchema} in the C{openclaw@2026.9.6} npm package
(C{dist/zod-schema-*.mjs}), which refuses any other.  A file with one of
these (or C{plugins}) at its top level is a whole OpenClaw config; any other
file is a bare voice-call plugin config.
"""

from __future__ import annotations

OPENCLAW_VERSION = "2026.9.6"

TOP_LEVEL_KEYS = frozenset(
    {
        "$schema",
        "meta",
        "env",
        "wizard",
        "diagnostics",
        "logging",
        "update",
        "telemetry",
        "browser",
        "ui",
        "secrets",
        "auth",
        "accessGroups",
        "acp",
        "models",
        "nodeHost",
        "agents",
        "worktreeRoot",
        "worktreeAcceleration",
        "tools",
        "security",
        "bindings",
        "broadcast",
        "attachments",
        "messages",
        "tts",
        "commands",
        "approvals",
        "session",
        "cron",
        "transcripts",
        "hooks",
        "channels",
        "discovery",
        "talk",
        "gateway",
        "cloudWorkers",
        "desktop",
        "memory",
        "mcp",
        "skills",
        "plugins",
        "surfaces",
        "proxy",
    }
)
