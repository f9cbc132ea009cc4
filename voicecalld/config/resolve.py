"""
Resolving the SecretRefs of a validated config, as OpenClaw's SecretRef
contract defines the sources: C{env} (the daemon's environment), C{file} (a
private JSON or single-value file) and C{exec} (a resolver program, see
L{voicecalld.config.command}).  C{store} is OpenClaw's own database, which
voicecalld cannot read.

Only references at keys voicecalld reads with this config are resolved (an
active surface, in upstream's words); the others stay unresolved, with a
note.  A reference that cannot be resolved is a L{Problem} at its key path.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from voicecalld.config.command import Outcome, run_bounded
from voicecalld.config.problem import Path, Problem
from voicecalld.config.schema import _KIND, json_key
from voicecalld.config.secret import Secret, SecretRef
from voicecalld.config.secretproviders import (
    EnvProvider,
    ExecProvider,
    FileProvider,
    SecretsBlock,
    StoreProvider,
)

Runner = Callable[..., Outcome]
# Exec resolver error codes OpenClaw shows; others may carry secrets and are not shown.
_SHOWN_EXEC_CODES = frozenset({"NOT_FOUND", "AMBIGUOUS_DUPLICATE_KEY"})
_READ_CHUNK = 65536


class _Failed(Exception):
    """Why a reference (or every reference of one provider) did not resolve."""


def resolve_secrets(
    settings: Any,
    secrets: SecretsBlock,
    environ: Mapping[str, str],
    *,
    runner: Runner = run_bounded,
) -> tuple[Any, list[Problem], list[Problem]]:
    """
    Return C{(settings, problems, notes)}: the settings with each active
    reference's value filled in, what could not be resolved, and the
    references left unresolved because nothing reads them.
    """
    found: list[tuple[Path, Secret]] = []

    def collect(secret: Secret, at: Path) -> Secret:
        if secret.ref is not None and not secret.resolved:
            found.append((at, secret))
        return secret

    map_secrets(settings, collect)
    if not found:
        return settings, [], []

    problems: list[Problem] = []
    notes: list[Problem] = []
    canonical: dict[int, SecretRef] = {}
    groups: dict[tuple[str, str], list[SecretRef]] = {}
    for at, secret in found:
        ref = secret.ref
        ref = attrs.evolve(ref, provider=ref.provider or secrets.defaults.alias(ref.source))
        canonical[id(secret)] = ref
        why = inactive(settings, at)
        if why is not None:
            notes.append(
                Problem(ref.where, f"secret reference {ref.label()} left unresolved: {why}")
            )
            continue
        groups.setdefault((ref.source, ref.provider), []).append(ref)

    values: dict[tuple[str, str, str], str] = {}
    for (source, alias), group in groups.items():
        try:
            provider = _provider(source, alias, secrets)
        except Problem as problem:
            if str(problem) not in map(str, problems):
                problems.append(problem)
            continue
        except _Failed as failure:
            problems.extend(_blame(group, str(failure)))
            continue
        try:
            got = _RESOLVERS[source](provider, alias, group, environ, runner)
        except _Failed as failure:
            problems.extend(_blame(group, str(failure)))
            continue
        for ref in group:
            value = got.get(ref.id)
            if isinstance(value, _Failed):
                problems.extend(_blame([ref], str(value)))
            elif not isinstance(value, str) or not value:
                problems.extend(_blame([ref], "resolved to a non-string or empty value"))
            else:
                values[(ref.source, ref.provider, ref.id)] = value

    def fill(secret: Secret, at: Path) -> Secret:
        ref = canonical.get(id(secret))
        if ref is None:
            return secret
        return Secret(values.get((ref.source, ref.provider, ref.id)), ref)

    return map_secrets(settings, fill), problems, notes


def _blame(refs: list[SecretRef], why: str) -> list[Problem]:
    return [
        Problem(ref.where, f"cannot resolve secret reference {ref.label()}: {why}") for ref in refs
    ]


def inactive(settings: Any, at: Path) -> str | None:
    """
    Why nothing reads the secret at plugin key path C{at} with these settings,
    or None when something does (the provider registry's choices, restated).
    """
    if not settings.enabled:
        return "voice calls are disabled in this config"
    if at[:1] == ("twilio",) and settings.provider != "twilio":
        return f"only the twilio provider reads it (provider is {settings.provider!r})"
    if at[:1] in (("streaming",), ("tts",)):
        if settings.provider == "mock" or not settings.streaming.enabled:
            return "only streaming calls read it (a carrier provider with streaming.enabled)"
    if at[:1] == ("realtime",):
        if settings.provider == "mock" or not settings.realtime.enabled:
            return "only realtime calls read it (a carrier provider with realtime.enabled)"
    return None


def map_secrets(obj: Any, fn: Callable[[Secret, Path], Secret], at: Path = ()) -> Any:
    """Rebuild a settings tree with C{fn(secret, key path)} applied to every L{Secret}."""
    if isinstance(obj, Secret):
        return fn(obj, at)
    if attrs.has(type(obj)):
        changes = {}
        for field in attrs.fields(type(obj)):
            if _KIND not in field.metadata:
                continue
            value = getattr(obj, field.name)
            new = map_secrets(value, fn, (*at, json_key(field)))
            if new is not value:
                changes[field.alias] = new
        return attrs.evolve(obj, **changes) if changes else obj
    if isinstance(obj, dict):
        mapped = {k: map_secrets(v, fn, (*at, str(k))) for k, v in obj.items()}
        return mapped if any(mapped[k] is not obj[k] for k in obj) else obj
    if isinstance(obj, tuple):
        items = tuple(map_secrets(v, fn, (*at, str(i))) for i, v in enumerate(obj))
        return items if any(a is not b for a, b in zip(items, obj, strict=True)) else obj
    return obj


def _provider(source: str, alias: str, secrets: SecretsBlock) -> Any:
    """The provider a reference names, as upstream picks it (built-in defaults first)."""
    raw = secrets.providers.get(alias)
    declared = raw.get("source") if isinstance(raw, dict) else None
    builtin = {"env": EnvProvider, "store": StoreProvider}.get(source)
    if builtin is not None and alias == secrets.defaults.alias(source) and declared != source:
        return builtin()
    if raw is None:
        where = f"secrets.providers.{alias}"
        if not secrets.present:
            raise _Failed(
                f"provider {alias!r} is not configured; a bare plugin config has no"
                " secrets.providers, so only env references resolve (name a whole OpenClaw"
                " config to use file or exec providers)"
            )
        raise _Failed(f"provider {alias!r} is not configured ({where} is not set)")
    provider = secrets.provider(alias)
    if provider.source != source:
        raise _Failed(
            f"secrets.providers.{alias} has source {provider.source!r},"
            f" but the reference asks for {source!r}"
        )
    return provider


def _resolve_env(provider: EnvProvider, alias, refs, environ, runner) -> dict[str, Any]:
    got: dict[str, Any] = {}
    for ref in refs:
        if provider.allowlist is not None and ref.id not in provider.allowlist:
            got[ref.id] = _Failed(
                f"environment variable {ref.id} is not in secrets.providers.{alias}.allowlist"
            )
        elif not environ.get(ref.id):
            got[ref.id] = _Failed(f"environment variable {ref.id} is missing or empty")
        else:
            got[ref.id] = environ[ref.id]
    return got


def _resolve_store(provider, alias, refs, environ, runner) -> dict[str, Any]:
    raise _Failed(
        "the store source is OpenClaw's own secret store, which voicecalld cannot read;"
        " use an env, file or exec reference"
    )


def _resolve_file(provider: FileProvider, alias, refs, environ, runner) -> dict[str, Any]:
    label = f"secrets.providers.{alias}.path"
    path = _user_path(provider.path, environ)
    payload = _read_private_file(path, label, provider.max_bytes, provider.timeout_ms / 1000)
    try:
        text = payload.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise _Failed(f"{label} {path} is not UTF-8 text") from None
    got: dict[str, Any] = {}
    if provider.mode == "singleValue":
        value = text.removesuffix("\n").removesuffix("\r")
        for ref in refs:
            got[ref.id] = (
                value
                if ref.id == "value"
                else _Failed(f"a singleValue file provider takes only the id 'value' ({label})")
            )
        return got
    try:
        document = json.loads(text)
    except ValueError:
        raise _Failed(f"{label} {path} is not valid JSON") from None
    if not isinstance(document, dict):
        raise _Failed(f"{label} {path} does not hold a JSON object")
    for ref in refs:
        try:
            got[ref.id] = json_pointer(document, ref.id)
        except KeyError as missing:
            got[ref.id] = _Failed(f"{missing.args[0]} in {path}")
    return got


def json_pointer(document: Any, pointer: str) -> Any:
    """The value at an RFC 6901 pointer; KeyError names the first segment not there."""
    if not pointer.startswith("/"):
        raise KeyError(f"{pointer!r} is not an absolute JSON pointer")
    node = document
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            if not token.isdigit() or int(token) >= len(node):
                raise KeyError(f"JSON pointer {pointer}: index {token!r} is out of bounds")
            node = node[int(token)]
        elif isinstance(node, dict) and token in node:
            node = node[token]
        else:
            raise KeyError(f"JSON pointer {pointer}: segment {token!r} does not exist")
    return node


def _read_private_file(path: str, label: str, max_bytes: int, timeout: float) -> bytes:
    """Read a file only if it is a regular, single-link file private to this user."""
    try:
        before = os.lstat(path)
    except OSError as e:
        raise _Failed(f"{label} {path} cannot be read: {e.strerror}") from None
    if stat.S_ISLNK(before.st_mode):
        raise _Failed(f"{label} {path} must not be a symlink")
    if not stat.S_ISREG(before.st_mode):
        raise _Failed(f"{label} {path} must be a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise _Failed(f"{label} {path} cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise _Failed(f"{label} {path} changed while it was opened")
        if opened.st_nlink > 1:
            raise _Failed(f"{label} {path} must not be hardlinked (copy it to a new private file)")
        if opened.st_mode & 0o077:
            raise _Failed(
                f"{label} {path} permissions are too open"
                f" ({stat.filemode(opened.st_mode)}; make it private: chmod 600)"
            )
        if opened.st_uid != os.geteuid():
            raise _Failed(f"{label} {path} must be owned by the user running voicecalld")
        if opened.st_size > max_bytes:
            raise _Failed(f"{label} {path} is larger than maxBytes ({max_bytes})")
        # A local regular file does not stall; the bound is checked between reads.
        deadline = time.monotonic() + timeout
        payload = bytearray()
        while chunk := handle.read(_READ_CHUNK):
            payload += chunk
            if len(payload) > max_bytes:
                raise _Failed(f"{label} {path} is larger than maxBytes ({max_bytes})")
            if time.monotonic() > deadline:
                raise _Failed(f"{label} {path}: reading it took longer than timeoutMs")
    return bytes(payload)


def _user_path(value: str, environ: Mapping[str, str]) -> str:
    """C{~} is the daemon's home; relative paths are relative to its working directory."""
    if (value == "~" or value.startswith("~/")) and environ.get("HOME"):
        value = environ["HOME"] + value[1:]
    return os.path.abspath(os.path.expanduser(value))


def _resolve_exec(provider: ExecProvider, alias, refs, environ, runner) -> dict[str, Any]:
    name = f"exec provider {alias!r}"
    if provider.plugin_integration is not None:
        raise _Failed(
            f"secrets.providers.{alias} is a plugin integration, whose command OpenClaw"
            " builds from the plugin's manifest; voicecalld cannot, so configure command"
            " and args for it"
        )
    command = _trusted_command(provider, alias, environ)
    ids = list(dict.fromkeys(ref.id for ref in refs))
    request = json.dumps({"protocolVersion": 1, "provider": alias, "ids": ids}).encode()
    env = {key: environ[key] for key in provider.pass_env if key in environ}
    env.update(provider.env)
    timeout_ms = provider.timeout_ms
    silent_ms = provider.no_output_timeout_ms or timeout_ms
    try:
        outcome = runner(
            [command, *provider.args],
            stdin=request,
            env=env,
            cwd=os.path.dirname(command),
            timeout=timeout_ms / 1000,
            no_output_timeout=silent_ms / 1000,
            max_output=provider.max_output_bytes,
        )
    except OSError as e:
        raise _Failed(f"{name} could not run {command}: {e.strerror}") from None
    if outcome.ended == "timeout":
        raise _Failed(f"{name} timed out after {timeout_ms} ms")
    if outcome.ended == "silent":
        raise _Failed(f"{name} produced no output for {silent_ms} ms")
    if outcome.ended == "too-much":
        raise _Failed(f"{name} output exceeded maxOutputBytes ({provider.max_output_bytes})")
    if outcome.code is not None and outcome.code < 0:
        raise _Failed(f"{name} was killed by signal {-outcome.code}")
    if outcome.code != 0:
        raise _Failed(f"{name} exited with code {outcome.code}")
    return _exec_values(outcome.stdout, ids, name, provider.json_only)


def _exec_values(stdout: bytes, ids: list[str], name: str, json_only: bool) -> dict[str, Any]:
    """Read a resolver's reply; its text is never put in a message (it may hold secrets)."""
    text = stdout.decode("utf-8", errors="replace").strip()
    if not text:
        raise _Failed(f"{name} returned empty stdout")
    plain = not json_only and len(ids) == 1
    try:
        reply = json.loads(text)
    except ValueError:
        if plain:
            return {ids[0]: text}
        raise _Failed(f"{name} returned invalid JSON") from None
    if plain and isinstance(reply, str):
        return {ids[0]: reply}
    if not isinstance(reply, dict):
        raise _Failed(f"{name} reply must be a JSON object")
    if reply.get("protocolVersion") != 1:
        raise _Failed(f"{name} reply: protocolVersion must be 1")
    values = reply.get("values")
    if not isinstance(values, dict):
        raise _Failed(f'{name} reply has no "values" object')
    errors = reply.get("errors") if isinstance(reply.get("errors"), dict) else {}
    got: dict[str, Any] = {}
    for ref_id in ids:
        if ref_id in errors:
            entry = errors[ref_id]
            code = entry.get("code") if isinstance(entry, dict) else None
            shown = f" ({code})" if code in _SHOWN_EXEC_CODES else ""
            got[ref_id] = _Failed(f"{name} failed for id {ref_id!r}{shown}")
        elif ref_id not in values:
            got[ref_id] = _Failed(f"{name} reply has no value for id {ref_id!r}")
        else:
            got[ref_id] = values[ref_id]
    return got


def _trusted_command(provider: ExecProvider, alias: str, environ: Mapping[str, str]) -> str:
    """The command's path, if it is a file this user owns and only this user may change."""
    label = f"secrets.providers.{alias}.command"
    path = _user_path(provider.command, environ)
    try:
        info = os.lstat(path)
    except OSError as e:
        raise _Failed(f"{label} {path} cannot be read: {e.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise _Failed(f"{label} {path} must not be a symlink (name the real file)")
    if not stat.S_ISREG(info.st_mode):
        raise _Failed(f"{label} {path} must be a file")
    if provider.trusted_dirs:
        dirs = [_user_path(d, environ) for d in provider.trusted_dirs]
        if not any(os.path.commonpath([d, path]) == d for d in dirs):
            raise _Failed(f"{label} {path} is outside trustedDirs")
    if info.st_mode & 0o022:
        raise _Failed(
            f"{label} {path} permissions are too open ({stat.filemode(info.st_mode)};"
            " it must not be group- or world-writable)"
        )
    if info.st_uid != os.getuid():
        raise _Failed(f"{label} {path} must be owned by the user running voicecalld")
    return path


_RESOLVERS = {
    "env": _resolve_env,
    "file": _resolve_file,
    "exec": _resolve_exec,
    "store": _resolve_store,
}
