"""
Tailscale Serve (tailnet only) and Funnel (public) through the C{tailscale}
CLI (1.52 or later).

A mount is made per path with C{--set-path}, so the webhook path and the
media-stream path are exposed together (upstream exposed only the webhook
path, so stream calls died; its PR #125468), and removed per path: without
C{--set-path}, C{tailscale serve --https=443 off} would remove every handler
on the port, including ones that are not ours.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred

from voicecalld.expose.process import ExposeError, ProcessResult, run

MODES = ("serve", "funnel")
FUNNEL_PORTS = (443, 8443, 10000)
_URL = re.compile(r"https://[^\s\"'<>]+")


class TailscaleArgv:
    """Every C{tailscale} command line voicecalld runs, in one place."""

    @staticmethod
    def status() -> list[str]:
        """Machine status as JSON (C{Self.DNSName}, C{BackendState})."""
        return ["status", "--json"]

    @staticmethod
    def mount(mode: str, https_port: int, path: str, target: str) -> list[str]:
        """Proxy C{https://<name>[:port]<path>} to C{target}, in the background."""
        port = [] if https_port == 443 else [f"--https={https_port}"]
        return [mode, "--bg", "--yes", *port, "--set-path", path, target]

    @staticmethod
    def unmount(mode: str, https_port: int, path: str) -> list[str]:
        """Remove the handler at C{path} on C{https_port} (and nothing else)."""
        return [mode, "--yes", f"--https={https_port}", "--set-path", path, "off"]


def check_mode(mode: str, https_port: int) -> None:
    """Refuse an unknown mode, or a port Funnel does not accept."""
    if mode not in MODES:
        raise ExposeError(f"tailscale mode must be serve or funnel, not {mode!r}")
    if not 0 < https_port < 65536:
        raise ExposeError(f"tailscale.port {https_port} is not a TCP port")
    if mode == "funnel" and https_port not in FUNNEL_PORTS:
        allowed = ", ".join(str(p) for p in FUNNEL_PORTS)
        raise ExposeError(
            f"tailscale funnel only accepts ports {allowed}; tailscale.port is {https_port}"
        )


def public_base(dns_name: str, https_port: int) -> str:
    """C{https://<name>} with C{:port} unless it is 443."""
    return f"https://{dns_name}" + ("" if https_port == 443 else f":{https_port}")


def hint(result: ProcessResult, what: str, timeout: float) -> str:
    """One line saying why a C{tailscale} run failed, with any URL it printed to fix it."""
    text = f"{result.stderr}\n{result.stdout}"
    lowered = text.lower()
    urls = _URL.findall(text)
    funnel_off = "funnel" in lowered and any(
        w in lowered for w in ("not enabled", "not available", "to enable", "attribute not set")
    )
    if result.timed_out:
        message = f"{what} did not finish within {timeout:g} s"
        if funnel_off:
            message += "; Funnel is not enabled for this machine"
        return message + (f"; tailscale asks to visit {urls[0]}" if urls else "")
    if funnel_off:
        message = f"{what} failed: Funnel is not enabled for this machine"
        return message + (f"; enable it at {urls[0]}" if urls else "")
    if "access denied" in lowered or "permission denied" in lowered:
        return (
            f"{what} failed: tailscale refused access; run"
            " `sudo tailscale set --operator=$USER` once, or run voicecalld as root"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = lines[0] if lines else f"exit status {result.exit_code}"
    return f"{what} failed: {detail[:300]}"


class Tailscale:
    """
    Drives the C{tailscale} CLI.

    @param reactor: spawns the processes.
    @param clock: times them out (default: C{reactor}).
    @param environ: the environment (and C{PATH}) of the child; default ours.
    """

    def __init__(
        self,
        *,
        reactor: Any,
        clock: Any = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        executable: str = "tailscale",
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self._environ = environ
        self._timeout = timeout
        self._executable = executable

    def _run(self, args: Sequence[str]) -> Deferred[ProcessResult]:
        return run(
            self._executable,
            args,
            reactor=self._reactor,
            clock=self._clock,
            environ=self._environ,
            timeout=self._timeout,
        )

    async def dns_name(self) -> str:
        """This machine's MagicDNS name, without the trailing dot."""
        result = await self._run(TailscaleArgv.status())
        if not result.ok:
            raise ExposeError(hint(result, "tailscale status", self._timeout))
        try:
            status = json.loads(result.stdout)
        except ValueError:
            raise ExposeError(
                "tailscale status --json printed something that is not JSON"
            ) from None
        state = status.get("BackendState") if isinstance(status, dict) else None
        if state not in (None, "Running"):
            raise ExposeError(f"tailscale is not running (state {state}); run `tailscale up`")
        me = status.get("Self") if isinstance(status, dict) else None
        name = me.get("DNSName") if isinstance(me, dict) else None
        name = name.rstrip(".") if isinstance(name, str) else ""
        if not name:
            raise ExposeError(
                "tailscale reports no DNS name for this machine; enable MagicDNS and HTTPS"
                " certificates for the tailnet"
            )
        return name

    async def mount(self, mode: str, https_port: int, mounts: Sequence[tuple[str, str]]) -> None:
        """Mount each (public path, local target URL) pair; all of them or none."""
        check_mode(mode, https_port)
        done: list[str] = []
        for path, target in mounts:
            result = await self._run(TailscaleArgv.mount(mode, https_port, path, target))
            if not result.ok:
                if done:
                    try:
                        await self.unmount(mode, https_port, done)
                    except ExposeError:
                        pass
                raise ExposeError(hint(result, f"tailscale {mode} {path}", self._timeout))
            done.append(path)

    async def unmount(self, mode: str, https_port: int, paths: Sequence[str]) -> None:
        """Remove the handler at each path; a path that is not mounted is fine."""
        check_mode(mode, https_port)
        problems = []
        for path in paths:
            result = await self._run(TailscaleArgv.unmount(mode, https_port, path))
            gone = "does not exist" in result.stderr or "does not exist" in result.stdout
            if not result.ok and not gone:
                problems.append(hint(result, f"tailscale {mode} {path} off", self._timeout))
        if problems:
            raise ExposeError("; ".join(problems))
