"""OpenClaw SecretRefs: where they are taken, their form, and resolving env, file and exec."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_jsonschema import problems as schema_problems
from voicecalld.config import ConfigError, parse_config
from voicecalld.config.jsonschema import plugin_schema
from voicecalld.config.schema import unstructure
from voicecalld.config.secret import REDACTED, UnresolvedSecret

PLUGIN = "plugins.entries.voice-call.config"
SOURCE = "/home/op/.openclaw/openclaw.json"
SECRET = "s3cr3t-value-never-shown"


def env_ref(name: str, provider: str = "default") -> dict[str, str]:
    return {"source": "env", "provider": provider, "id": name}


def store_ref(name: str) -> dict[str, str]:
    return {"source": "store", "provider": "default", "id": name}


def twilio(token: Any, **more: Any) -> dict[str, Any]:
    """A Twilio plugin config whose auth token is C{token}."""
    return {
        "provider": "twilio",
        "fromNumber": "+15550001234",
        "twilio": {"accountSid": "AC1", "authToken": token},
        **more,
    }


def whole(plugin: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"plugins": {"entries": {"voice-call": {"config": plugin}}}, **top}


def load(data: Any, environ: dict[str, str] | None = None, **kwargs: Any):
    return parse_config(data, SOURCE, environ or {}, **kwargs)


def refused(data: Any, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        load(data, environ)
    message = str(raised.value)
    assert "\n" not in message
    assert SECRET not in message
    return message


def token(data: Any, environ: dict[str, str] | None = None) -> str:
    return load(data, environ).settings.twilio.auth_token.reveal()


# --- where references are taken, and their form -------------------------------------------


def streaming(key: Any) -> dict[str, Any]:
    return twilio("t", streaming={"enabled": True, "providers": {"openai": {"apiKey": key}}})


def test_each_upstream_place_takes_a_reference():
    environ = {"K": SECRET}
    s = load(whole(twilio(env_ref("K"))), environ).settings
    assert s.twilio.auth_token.reveal() == SECRET
    s = load(whole(streaming("${K}")), environ).settings
    assert s.streaming.providers["openai"].api_key.reveal() == SECRET
    tts = {"providers": {"openai": {"apiKey": "$K"}, "elevenlabs": {"apiKey": env_ref("K")}}}
    s = load(whole({**streaming("k"), "tts": tts}), environ).settings
    assert s.tts.providers["openai"].api_key.reveal() == SECRET
    assert s.tts.providers["elevenlabs"].api_key.reveal() == SECRET
    realtime = {
        "enabled": True,
        "providers": {"openai": {"apiKey": env_ref("K"), "model": "gpt-realtime"}},
    }
    s = load(whole(twilio("t", realtime=realtime, inboundPolicy="open")), environ).settings
    assert s.realtime.providers["openai"].api_key.reveal() == SECRET


@pytest.mark.parametrize(
    ("plugin", "expected"),
    [
        (
            {"telnyx": {"apiKey": env_ref("K")}},
            f"{PLUGIN}.telnyx.apiKey: secret references are not accepted here (as upstream,"
            " only at twilio.authToken, tts.providers.*.apiKey, streaming.providers.*.apiKey,"
            " realtime.providers.*.apiKey)",
        ),
        (
            {"tunnel": {"ngrokAuthToken": "${NGROK_AUTHTOKEN}"}},
            f"{PLUGIN}.tunnel.ngrokAuthToken: '${{NGROK_AUTHTOKEN}}' (an environment"
            " reference) is not accepted here",
        ),
        (
            twilio({"source": "env", "provider": "default", "id": "K", "value": "x"}),
            f"{PLUGIN}.twilio.authToken.value: unknown key (a secret reference has source,"
            " provider and id)",
        ),
        (
            twilio({"source": "env", "id": "K"}),
            f"{PLUGIN}.twilio.authToken: a secret reference needs source, provider and id"
            " (missing: provider)",
        ),
        (
            twilio({"source": "vault", "provider": "default", "id": "K"}),
            f"{PLUGIN}.twilio.authToken.source: must be one of 'env', 'file', 'exec', 'store'",
        ),
        (
            twilio(env_ref("K", provider="Default")),
            f"{PLUGIN}.twilio.authToken.provider: must be a provider alias matching",
        ),
        (
            twilio(env_ref("lower_case")),
            f"{PLUGIN}.twilio.authToken.id: a env reference id must be an environment"
            " variable name",
        ),
        (
            twilio({"source": "file", "provider": "f", "id": "providers/twilio"}),
            f"{PLUGIN}.twilio.authToken.id: a file reference id must be an absolute JSON pointer",
        ),
        (
            twilio({"source": "exec", "provider": "vault", "id": "a/../b"}),
            f"{PLUGIN}.twilio.authToken.id: a exec reference id must be",
        ),
        (twilio(7), f"{PLUGIN}.twilio.authToken: expected a string or a secret reference"),
        (
            twilio("t", realtime={"providers": {"openai": {"apiKey": {"source": "env"}}}}),
            f"{PLUGIN}.realtime.providers.openai.apiKey: a secret reference needs",
        ),
    ],
)
def test_form_is_checked_by_path(plugin, expected):
    assert expected in refused(whole(plugin))


def test_the_manifest_schema_takes_references_where_the_daemon_does():
    schema = plugin_schema()

    def accepts(node: dict[str, Any], value: Any) -> bool:
        if "anyOf" in node:
            return any(accepts(branch, value) for branch in node["anyOf"])
        missing = [k for k in node.get("required", []) if k not in value]
        return not missing and schema_problems(node, value) == []

    token_schema = schema["properties"]["twilio"]["properties"]["authToken"]
    for value in ("t", "${K}", env_ref("K"), {"source": "exec", "provider": "v", "id": "a#b"}):
        assert accepts(token_schema, value), value
    for value in ("", env_ref("k"), {"source": "env", "id": "K"}, {**env_ref("K"), "x": 1}):
        assert not accepts(token_schema, value), value
    telnyx = schema["properties"]["telnyx"]["properties"]["apiKey"]
    assert telnyx == {"type": "string", "minLength": 1}


# --- env ----------------------------------------------------------------------------------


def test_env_forms_and_defaults():
    environ = {"TWILIO_AUTH_TOKEN": SECRET}
    for form in ("${TWILIO_AUTH_TOKEN}", "$TWILIO_AUTH_TOKEN", env_ref("TWILIO_AUTH_TOKEN")):
        assert token(whole(twilio(form)), environ) == SECRET
        assert token(twilio(form), environ) == SECRET  # a bare config too
    # The shorthand uses secrets.defaults.env; an explicit env provider applies its allowlist.
    secrets = {"defaults": {"env": "mine"}, "providers": {"mine": {"source": "env"}}}
    assert token(whole(twilio("${TWILIO_AUTH_TOKEN}"), secrets=secrets), environ) == SECRET


def test_env_failures_name_the_key():
    assert (
        refused(whole(twilio("${TWILIO_AUTH_TOKEN}")))
        == f"{SOURCE}: {PLUGIN}.twilio.authToken: cannot resolve secret reference"
        " env:default:TWILIO_AUTH_TOKEN: environment variable TWILIO_AUTH_TOKEN is missing"
        " or empty"
    )
    assert "is missing or empty" in refused(twilio(env_ref("K")), {"K": ""})
    secrets = {"providers": {"default": {"source": "env", "allowlist": ["OPENAI_API_KEY"]}}}
    assert "environment variable K is not in secrets.providers.default.allowlist" in refused(
        whole(twilio(env_ref("K")), secrets=secrets), {"K": SECRET}
    )
    assert "provider 'other' is not configured (secrets.providers.other is not set)" in refused(
        whole(twilio(env_ref("K", "other")), secrets={}), {"K": SECRET}
    )


# --- file ---------------------------------------------------------------------------------


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.json"
    path.write_text(
        json.dumps(
            {
                "twilio": {"authToken": SECRET},
                "a/b": {"c~d": "escaped"},
                "list": ["zero", "one"],
                "empty": "",
            }
        )
    )
    path.chmod(0o600)
    return path


def file_config(path: Path | str, pointer: str, **provider: Any) -> dict[str, Any]:
    ref = {"source": "file", "provider": "filemain", "id": pointer}
    secrets = {"providers": {"filemain": {"source": "file", "path": str(path), **provider}}}
    return whole(twilio(ref), secrets=secrets)


def test_file_json_pointers(secrets_file):
    assert token(file_config(secrets_file, "/twilio/authToken")) == SECRET
    assert token(file_config(secrets_file, "/a~1b/c~0d")) == "escaped"
    assert token(file_config(secrets_file, "/list/1")) == "one"


def test_file_single_value_and_home(tmp_path):
    (tmp_path / "token").write_text(SECRET + "\n")
    (tmp_path / "token").chmod(0o600)
    config = file_config("~/token", "value", mode="singleValue")
    assert token(config, {"HOME": str(tmp_path)}) == SECRET


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("/twilio/sid", "JSON pointer /twilio/sid: segment 'sid' does not exist in "),
        ("/list/2", "JSON pointer /list/2: index '2' is out of bounds"),
        ("/twilio", "resolved to a non-string or empty value"),
        ("/empty", "resolved to a non-string or empty value"),
        ("value", "JSON pointer"),
    ],
)
def test_file_pointer_failures(secrets_file, pointer, expected):
    message = refused(file_config(secrets_file, pointer))
    assert message.startswith(
        f"{SOURCE}: {PLUGIN}.twilio.authToken: cannot resolve secret reference"
        f" file:filemain:{pointer}: "
    )
    assert expected in message


def test_file_must_be_private(secrets_file, tmp_path):
    secrets_file.chmod(0o644)
    assert "secrets.providers.filemain.path" in refused(file_config(secrets_file, "/twilio"))
    assert "permissions are too open (-rw-r--r--; make it private: chmod 600)" in refused(
        file_config(secrets_file, "/twilio")
    )
    secrets_file.chmod(0o600)
    link = tmp_path / "link.json"
    link.symlink_to(secrets_file)
    assert "must not be a symlink" in refused(file_config(link, "/twilio/authToken"))
    hard = tmp_path / "hard.json"
    os.link(secrets_file, hard)
    assert "must not be hardlinked" in refused(file_config(hard, "/twilio/authToken"))
    assert "cannot be read: No such file or directory" in refused(
        file_config(tmp_path / "missing.json", "/x")
    )


def test_file_provider_config_is_checked(secrets_file):
    assert f"{SOURCE}: secrets.providers.filemain.timeoutMs: must be at most 120000" in refused(
        file_config(secrets_file, "/twilio/authToken", timeoutMs=999999)
    )
    assert "secrets.providers.filemain.colour: unknown key" in refused(
        file_config(secrets_file, "/twilio/authToken", colour="red")
    )
    assert (
        "provider 'f' is not configured; a bare plugin config has no secrets.providers,"
        in refused(twilio({"source": "file", "provider": "f", "id": "/x"}))
    )
    mismatch = file_config(secrets_file, "/twilio/authToken")
    mismatch["plugins"]["entries"]["voice-call"]["config"]["twilio"]["authToken"] = {
        "source": "exec",
        "provider": "filemain",
        "id": "x",
    }
    assert "secrets.providers.filemain has source 'file', but the reference asks for 'exec'" in (
        refused(mismatch)
    )


# --- exec ---------------------------------------------------------------------------------

RESOLVER = (
    """
import json, os, sys
request = json.load(sys.stdin)
values = {i: os.environ.get("PREFIX", "") + i for i in request["ids"] if i != "missing"}
errors = {"missing": {"code": "NOT_FOUND", "message": "leaks """
    + SECRET
    + """"}}
print(json.dumps({"protocolVersion": request["protocolVersion"], "provider": request["provider"],
                  "values": values, "errors": errors, "seen": sorted(os.environ)}))
"""
)


def program(tmp_path: Path, body: str, name: str = "resolver", mode: int = 0o700) -> Path:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(mode)
    return path


def exec_config(command: Path | str, *ids: str, **provider: Any) -> dict[str, Any]:
    refs = [{"source": "exec", "provider": "vault", "id": i} for i in ids]
    plugin = twilio(refs[0])
    if len(refs) > 1:
        plugin["streaming"] = {"enabled": True, "providers": {"openai": {"apiKey": refs[1]}}}
    secrets = {"providers": {"vault": {"source": "exec", "command": str(command), **provider}}}
    return whole(plugin, secrets=secrets)


def test_exec_resolves_every_id_in_one_request(tmp_path):
    command = program(tmp_path, RESOLVER)
    config = exec_config(
        command, "twilio/auth#token", "openai/key", env={"PREFIX": "v:"}, passEnv=["HOME"]
    )
    s = load(config, {"HOME": "/home/op", "OTHER": "not passed"}).settings
    assert s.twilio.auth_token.reveal() == "v:twilio/auth#token"
    assert s.streaming.providers["openai"].api_key.reveal() == "v:openai/key"


def test_exec_gets_only_the_environment_it_is_given(tmp_path):
    # (Python itself adds LC_CTYPE when the locale is C: PEP 538.)
    names = "','.join(sorted(set(os.environ) - {'LC_CTYPE'}))"
    command = program(tmp_path, f"import os\nprint({names})")
    config = exec_config(command, "k", jsonOnly=False, env={"VAULT_ADDR": "x"}, passEnv=["HOME"])
    assert token(config, {"HOME": "/home/op", "TWILIO_AUTH_TOKEN": SECRET}) == "HOME,VAULT_ADDR"


def test_exec_plain_output_when_json_only_is_off(tmp_path):
    command = program(tmp_path, f"print({SECRET!r})")
    assert token(exec_config(command, "k", jsonOnly=False)) == SECRET
    assert "exec provider 'vault' returned invalid JSON" in refused(exec_config(command, "k"))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (RESOLVER, "exec provider 'vault' failed for id 'missing' (NOT_FOUND)"),
        (
            f"import sys; print({SECRET!r}, file=sys.stderr); sys.exit(3)",
            "exec provider 'vault' exited with code 3",
        ),
        ('print(\'{"protocolVersion": 2, "values": {}}\')', "protocolVersion must be 1"),
        ('print(\'{"protocolVersion": 1, "values": {}}\')', "reply has no value for id"),
        ("pass", "exec provider 'vault' returned empty stdout"),
        ("print('x' * 5000)", "output exceeded maxOutputBytes (1000)"),
    ],
)
def test_exec_failures_never_show_its_output(tmp_path, body, expected):
    command = program(tmp_path, body)
    message = refused(exec_config(command, "missing", maxOutputBytes=1000))
    assert message.startswith(
        f"{SOURCE}: {PLUGIN}.twilio.authToken: cannot resolve secret reference exec:vault:missing: "
    )
    assert expected in message


def test_exec_that_hangs_is_killed_at_its_timeout(tmp_path):
    command = program(tmp_path, "import threading\nthreading.Event().wait()")
    started = time.monotonic()
    message = refused(exec_config(command, "k", timeoutMs=300, noOutputTimeoutMs=10000))
    assert "exec provider 'vault' timed out after 300 ms" in message
    assert time.monotonic() - started < 10
    silent = refused(exec_config(command, "k", timeoutMs=10000, noOutputTimeoutMs=300))
    assert "exec provider 'vault' produced no output for 300 ms" in silent


def test_exec_command_must_be_trusted(tmp_path):
    command = program(tmp_path, RESOLVER, mode=0o770)
    assert "permissions are too open (-rwxrwx---; it must not be group- or world-writable)" in (
        refused(exec_config(command, "k"))
    )
    command.chmod(0o700)
    link = tmp_path / "link"
    link.symlink_to(command)
    assert "must not be a symlink (name the real file)" in refused(exec_config(link, "k"))
    assert "is outside trustedDirs" in refused(exec_config(command, "k", trustedDirs=["/opt"]))
    assert token(exec_config(command, "k", trustedDirs=[str(tmp_path)])) == "k"
    assert "secrets.providers.vault.command: must be an absolute path" in refused(
        exec_config("bin/resolver", "k")
    )
    integration = whole(
        twilio({"source": "exec", "provider": "team", "id": "k"}),
        secrets={
            "providers": {
                "team": {
                    "source": "exec",
                    "pluginIntegration": {"pluginId": "acme", "integrationId": "store"},
                }
            }
        },
    )
    assert "is a plugin integration" in refused(integration)


# --- sources that cannot be read here, and keys nothing reads -------------------------------


def test_the_store_source_is_refused_with_its_reason():
    assert (
        "cannot resolve secret reference store:default:TWILIO_AUTH_TOKEN: the store source is"
        " OpenClaw's own secret store, which voicecalld cannot read"
        in refused(whole(twilio(store_ref("TWILIO_AUTH_TOKEN"))))
    )


def test_references_nothing_reads_stay_unresolved_with_a_note():
    data = whole(
        {"provider": "mock", "twilio": {"authToken": "${ABSENT}"}},
        tts={"providers": {"openai": {"apiKey": store_ref("K")}}},
    )
    loaded = load(data)
    assert [str(n) for n in loaded.notes] == [
        f"{PLUGIN}.twilio.authToken: secret reference env:default:ABSENT left unresolved: only"
        " the twilio provider reads it (provider is 'mock')",
        "tts.providers.openai.apiKey: secret reference store:default:K left unresolved: only"
        " streaming calls read it (a carrier provider with streaming.enabled)",
    ]
    with pytest.raises(UnresolvedSecret):
        loaded.settings.twilio.auth_token.reveal()


def test_a_core_tts_reference_names_its_own_key():
    data = whole(
        streaming("k"),
        tts={"providers": {"openai": {"apiKey": "${ABSENT}"}}},
    )
    assert refused(data).startswith(
        f"{SOURCE}: tts.providers.openai.apiKey: cannot resolve secret reference"
    )


def test_without_resolving_the_form_is_still_checked():
    loaded = load(whole(twilio("${ABSENT}")), resolve_refs=False)
    assert not loaded.settings.twilio.auth_token.resolved
    with pytest.raises(ConfigError):
        load(whole(twilio(env_ref("bad"))), resolve_refs=False)


# --- redaction ----------------------------------------------------------------------------


def test_resolved_secrets_are_never_shown(secrets_file):
    loaded = load(file_config(secrets_file, "/twilio/authToken"))
    effective = unstructure(loaded.settings)
    assert effective["twilio"]["authToken"] == {
        "source": "file",
        "provider": "filemain",
        "id": REDACTED,
    }
    for shown in (json.dumps(effective), repr(loaded), str(loaded.settings.twilio)):
        assert SECRET not in shown
    literal = unstructure(load(whole(twilio(SECRET))).settings)
    assert literal["twilio"]["authToken"] == REDACTED
