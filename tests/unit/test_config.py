"""Reading configs: both eras, strict keys, env fallbacks, TTS merge, legacy keys, errors."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import TestCase

from voicecalld.config import ConfigError, load_config, parse_config, resolve_config_path
from voicecalld.config.features import unbuilt_notes
from voicecalld.config.merge import deep_merge
from voicecalld.config.schema import unstructure
from voicecalld.config.secret import REDACTED, Secret

FIXTURES = Path(__file__).parent.parent / "fixtures" / "configs"
PLUGIN = "plugins.entries.voice-call.config"


def whole(plugin: dict, **top: object) -> dict:
    """A whole OpenClaw config around a plugin config."""
    return {"plugins": {"entries": {"voice-call": {"config": plugin}}}, **top}


def error(data: object, environ: dict | None = None) -> str:
    try:
        parse_config(data, "/etc/openclaw.json", environ or {})
    except ConfigError as e:
        return str(e)
    raise AssertionError("the config was accepted")


class DefaultsTests(TestCase):
    """No config at all: upstream's defaults, the mock provider."""

    def test_empty_means_enabled_mock(self):
        s = parse_config({}, None, {}).settings
        self.assertEqual((s.enabled, s.provider), (True, "mock"))
        self.assertEqual(s.serve.port, 3334)
        self.assertEqual(s.serve.bind, "127.0.0.1")
        self.assertEqual(s.serve.path, "/voice/webhook")
        self.assertEqual(s.streaming.stream_path, "/voice/stream")
        self.assertEqual(s.outbound.default_mode, "notify")
        self.assertEqual(s.outbound.notify_hangup_delay_sec, 3)
        self.assertEqual(s.max_duration_seconds, 300)
        self.assertEqual(s.transcript_timeout_ms, 180000)
        self.assertEqual(s.ring_timeout_ms, 30000)
        self.assertEqual(s.max_concurrent_calls, 1)
        self.assertEqual(s.inbound_policy, "disabled")
        self.assertEqual(s.response_timeout_ms, 30000)
        self.assertIn("+1900", s.outbound.denied_prefixes)
        self.assertFalse(s.outbound.machine_detection)
        self.assertEqual(s.outbound.voicemail_action, "leave-message")

    def test_machine_detection(self):
        config = {"outbound": {"machineDetection": True, "voicemailAction": "hangup"}}
        s = parse_config(config, None, {}).settings
        self.assertEqual(
            (s.outbound.machine_detection, s.outbound.voicemail_action), (True, "hangup")
        )
        self.assertIn(
            "outbound.machineDetection: expected true or false",
            error({"outbound": {"machineDetection": "on"}}),
        )
        self.assertIn(
            "outbound.voicemailAction: must be one of 'leave-message', 'hangup'",
            error({"outbound": {"voicemailAction": "voicemail"}}),
        )

    def test_no_file_found_means_defaults(self):
        home = self.mktemp()
        os.makedirs(home)
        self.assertIsNone(resolve_config_path(None, {"HOME": home}))
        self.assertEqual(
            resolve_config_path(None, {"VOICECALLD_CONFIG": "/a", "OPENCLAW_CONFIG_PATH": "/b"}),
            "/a",
        )
        self.assertEqual(resolve_config_path("/c", {"VOICECALLD_CONFIG": "/a"}), "/c")
        os.makedirs(os.path.join(home, ".openclaw"))
        Path(home, ".openclaw", "openclaw.json").write_text("{}")
        self.assertEqual(
            resolve_config_path(None, {"HOME": home}),
            os.path.join(home, ".openclaw", "openclaw.json"),
        )


class ErasTests(TestCase):
    """Configs from the seed-era plugin and from 2026.9 both load."""

    def test_seed_era_config(self):
        loaded = load_config(str(FIXTURES / "seed-era.json5"), {})
        s = loaded.settings
        self.assertEqual(loaded.prefix, ("plugins", "entries", "voice-call", "config"))
        self.assertEqual(s.provider, "twilio")
        self.assertEqual(s.from_number, "+15550001234")
        openai_stt = s.streaming.providers["openai"]
        self.assertEqual(
            (openai_stt.model, openai_stt.silence_duration_ms, openai_stt.vad_threshold),
            ("gpt-4o-transcribe", 700, 0.6),
        )
        self.assertEqual(openai_stt.api_key.reveal(), "sk-seed-stream")
        self.assertEqual(s.streaming.provider, "openai")
        self.assertEqual(s.tts.provider, "elevenlabs")
        self.assertEqual(s.tts.providers["elevenlabs"].model_id, "eleven_turbo_v2_5")
        self.assertEqual(s.tts.providers["elevenlabs"].speaker_voice_id, "pMsXgVXv3BLzUgSXRplE")
        self.assertEqual(s.tts.providers["openai"].speaker_voice, "alloy")
        notes = [str(n) for n in loaded.notes]
        self.assertIn(f"{PLUGIN}.twilio.from: legacy key, read as {PLUGIN}.fromNumber", notes)
        self.assertTrue(any("stt: removed upstream" in n for n in notes))
        self.assertTrue(any(n.startswith("messages.tts.openai: legacy key") for n in notes))

    def test_current_config(self):
        loaded = load_config(str(FIXTURES / "current-2026.9.json5"), {})
        s = loaded.settings
        self.assertEqual(
            (s.agent_id, s.session_scope, s.twilio.region), ("phone", "per-call", "ie1")
        )
        self.assertEqual(s.numbers["+15550001234"].inbound_greeting, "Sales, how can I help?")
        self.assertEqual(s.tailscale.port, 8443)
        self.assertEqual(s.tts.providers["openai"].speaker_voice, "cedar")
        self.assertEqual(s.tts.providers["openai"].model, "gpt-4o-mini-tts")
        self.assertEqual(s.realtime.tool_policy, "safe-read-only")
        self.assertEqual(s.webhook_security.trusted_proxy_ips, ("10.0.0.2",))
        self.assertEqual(loaded.notes, ())
        self.assertEqual(unbuilt_notes(loaded), [])

    def test_bare_plugin_config(self):
        loaded = load_config(str(FIXTURES / "bare-plugin.json5"), {})
        self.assertEqual(loaded.prefix, ())
        self.assertEqual(loaded.settings.max_concurrent_calls, 3)
        self.assertEqual(loaded.settings.inbound_greeting, "Hi from the mock")

    def test_whole_config_without_the_plugin_entry_is_the_default_only_if_implicit(self):
        loaded = parse_config({"gateway": {"port": 1}}, "/x", {}, named=False)
        self.assertEqual(loaded.settings.provider, "mock")
        self.assertIn("no voice-call plugin entry", str(loaded.notes[0]))
        self.assertIn(
            "/etc/openclaw.json: plugins.entries.voice-call: not set: this OpenClaw config"
            " has no voice-call plugin entry",
            error({"gateway": {"port": 1}}),
        )


class StrictnessTests(TestCase):
    """Unknown keys and bad values name the file, the key path and the reason."""

    def test_unknown_key_anywhere(self):
        self.assertIn(
            f"/etc/openclaw.json: {PLUGIN}.serve.prot: unknown key",
            error(whole({"serve": {"prot": 1}})),
        )
        self.assertIn("streaming.bogus: unknown key", error({"streaming": {"bogus": True}}))
        self.assertIn(
            "tts.providers.openai.colour: unknown key",
            error({"tts": {"providers": {"openai": {"colour": "red"}}}}),
        )

    def test_values(self):
        cases = [
            ({"fromNumber": "5550001234"}, "fromNumber: '5550001234' is not an E.164 number"),
            ({"allowFrom": ["+1555", "nope"]}, "allowFrom.1: 'nope' is not an E.164 number"),
            ({"provider": "skype"}, "provider: must be one of 'telnyx', 'twilio', 'plivo'"),
            ({"maxDurationSeconds": 0}, "maxDurationSeconds: must be a positive whole number"),
            ({"maxConcurrentCalls": 1.5}, "maxConcurrentCalls: expected a whole number"),
            ({"serve": {"port": "3334"}}, "serve.port: expected a whole number, got a string"),
            ({"serve": {"port": 70000}}, "serve.port: must be at most 65535"),
            ({"serve": {"path": "voice"}}, "serve.path: 'voice' is not a URL path"),
            ({"outbound": {"notifyHangupDelaySec": -1}}, "must be at least 0"),
            ({"publicUrl": "ftp://x"}, "publicUrl: 'ftp://x' is not an absolute"),
            (
                {"streaming": {"providers": {"openai": {"vadThreshold": 2}}}},
                "vadThreshold: must be at most 1",
            ),
            ({"tts": {"timeoutMs": 10}}, "tts.timeoutMs: must be at least 1000"),
            ({"enabled": "yes"}, "enabled: expected true or false"),
            ({"numbers": {"12": {}}}, "numbers.12: '12' is not an E.164 number"),
            ({"outbound": {"deniedPrefixes": ["1900"]}}, "is not a number prefix"),
            ({"twilio": {"region": "mars"}}, "twilio.region: must be one of"),
        ]
        for data, text in cases:
            with self.subTest(data=data):
                self.assertIn(text, error(data))

    def test_provider_requirements_are_collected(self):
        message = error(whole({"provider": "twilio"}))
        self.assertIn(f"{PLUGIN}.fromNumber: required for provider 'twilio'", message)
        self.assertIn(
            f"{PLUGIN}.twilio.accountSid: required for provider 'twilio' (or set"
            " TWILIO_ACCOUNT_SID)",
            message,
        )
        self.assertIn("; ", message)
        self.assertEqual(message.count("\n"), 0)
        self.assertIn(
            "telnyx.publicKey",
            error(
                {
                    "provider": "telnyx",
                    "fromNumber": "+15550001234",
                    "telnyx": {"apiKey": "k", "connectionId": "c"},
                }
            ),
        )
        parse_config(
            {
                "provider": "telnyx",
                "fromNumber": "+15550001234",
                "skipSignatureVerification": True,
                "telnyx": {"apiKey": "k", "connectionId": "c"},
            },
            None,
            {},
        )

    def test_realtime_rules(self):
        self.assertIn(
            'must not be "disabled" when realtime.enabled',
            error(
                {
                    "realtime": {"enabled": True},
                    "provider": "twilio",
                    "fromNumber": "+15550001234",
                    "twilio": {"accountSid": "a", "authToken": "b"},
                }
            ),
        )
        both = error(
            {"inboundPolicy": "open", "realtime": {"enabled": True}, "streaming": {"enabled": True}}
        )
        self.assertIn("realtime.enabled: realtime.enabled and streaming.enabled cannot both", both)
        self.assertIn("/etc/openclaw.json", both)

    def test_realtime_runs_on_every_carrier(self):
        for provider, block in (
            ("twilio", {"twilio": {"accountSid": "a", "authToken": "b"}}),
            ("telnyx", {"telnyx": {"apiKey": "k", "connectionId": "c"}}),
            ("plivo", {"plivo": {"authId": "MA1", "authToken": "t"}}),
        ):
            loaded = parse_config(
                {
                    "provider": provider,
                    "fromNumber": "+15550001234",
                    "skipSignatureVerification": True,
                    "inboundPolicy": "open",
                    "realtime": {"enabled": True, "providers": {"openai": {}}},
                    **block,
                },
                None,
                {},
            )
            self.assertEqual(unbuilt_notes(loaded), [], provider)

    def test_realtime_that_will_be_skipped_is_a_warning(self):
        on = {"inboundPolicy": "open", "realtime": {"enabled": True}}
        (mock,) = unbuilt_notes(parse_config(on, None, {}))
        self.assertIn("realtime.enabled: realtime voice needs a carrier's media stream", mock)
        carrier = {
            **on,
            "provider": "twilio",
            "fromNumber": "+15550001234",
            "twilio": {"accountSid": "a", "authToken": "b"},
        }
        unknown = {**carrier, "realtime": {"enabled": True, "provider": "acme"}}
        (note,) = unbuilt_notes(parse_config(unknown, None, {}))
        self.assertIn("realtime.provider: unknown realtime provider 'acme'", note)
        self.assertIn("realtime is skipped", note)
        (none,) = unbuilt_notes(parse_config(carrier, None, {}))
        self.assertIn("no realtime provider is configured", none)
        named = {**carrier, "realtime": {"enabled": True, "provider": "openai"}}
        (missing,) = unbuilt_notes(parse_config(named, None, {}))
        self.assertIn("realtime.providers.openai: realtime.provider is 'openai'", missing)

    def test_realtime_parts_not_built_are_named(self):
        loaded = parse_config(
            {"realtime": {"agentContext": {"enabled": True}, "consultFastMode": True}}, None, {}
        )
        notes = [n.split(":")[0] for n in unbuilt_notes(loaded)]
        self.assertEqual(notes, ["realtime.agentContext", "realtime.consultThinkingLevel"])

    def test_disabled_configs_skip_provider_checks(self):
        s = parse_config({"enabled": False, "provider": "twilio"}, None, {}).settings
        self.assertFalse(s.enabled)
        entry_off = {"plugins": {"entries": {"voice-call": {"enabled": False}}}}
        self.assertFalse(parse_config(entry_off, None, {}).settings.enabled)

    def test_bad_files(self):
        path = self.mktemp()
        Path(path).write_text("{ provider: 'mock', // trailing comma is fine\n }")
        self.assertEqual(load_config(path, {}).settings.provider, "mock")
        Path(path).write_text("{ provider: ")
        with self.assertRaises(ConfigError) as raised:
            load_config(path, {})
        self.assertIn(f"{path}: (top level): not valid JSON5", str(raised.exception))
        with self.assertRaises(ConfigError) as raised:
            load_config(path + ".missing", {})
        self.assertIn("cannot read the file", str(raised.exception))
        self.assertIn("expected a JSON object", error([1, 2]))


class EnvironmentTests(TestCase):
    """Secrets fall back to the environment, only for the selected provider."""

    def test_provider_credentials(self):
        env = {
            "TWILIO_ACCOUNT_SID": "AC9",
            "TWILIO_AUTH_TOKEN": "tok",
            "TWILIO_FROM_NUMBER": "+15550001111",
            "TELNYX_API_KEY": "unused",
        }
        loaded = parse_config({"provider": "twilio"}, None, env)
        s = loaded.settings
        self.assertEqual(
            (s.twilio.account_sid, s.twilio.auth_token.reveal(), s.from_number),
            ("AC9", "tok", "+15550001111"),
        )
        self.assertIsNone(s.telnyx.api_key)
        self.assertEqual(loaded.from_environment["twilio.authToken"], "TWILIO_AUTH_TOKEN")

    def test_config_wins_over_the_environment(self):
        s = parse_config(
            {
                "provider": "twilio",
                "fromNumber": "+15550002222",
                "twilio": {"accountSid": "AC1", "authToken": "file"},
            },
            None,
            {"TWILIO_AUTH_TOKEN": "env", "TWILIO_FROM_NUMBER": "+15550003333"},
        )
        self.assertEqual(s.settings.twilio.auth_token.reveal(), "file")
        self.assertEqual(s.settings.from_number, "+15550002222")

    def test_a_bad_environment_value_is_blamed_on_its_variable(self):
        message = error(
            {"provider": "twilio"},
            {"TWILIO_FROM_NUMBER": "555", "TWILIO_ACCOUNT_SID": "a", "TWILIO_AUTH_TOKEN": "b"},
        )
        self.assertIn("fromNumber: '555' is not an E.164 number", message)
        self.assertIn("(the value comes from $TWILIO_FROM_NUMBER)", message)

    def test_tts_and_streaming_keys(self):
        env = {
            "OPENAI_API_KEY": "sk-env",
            "ELEVENLABS_API_KEY": "xi-env",
            "OPENAI_BASE_URL": "http://127.0.0.1:9999/v1",
            "VOICECALLD_SOCKET": "/run/v.sock",
        }
        s = parse_config({"streaming": {"enabled": True}}, None, env).settings
        self.assertEqual(s.streaming.providers["openai"].api_key.reveal(), "sk-env")
        self.assertEqual(s.tts.providers["openai"].api_key.reveal(), "sk-env")
        self.assertEqual(s.tts.providers["openai"].base_url, "http://127.0.0.1:9999/v1")
        self.assertEqual(s.tts.providers["elevenlabs"].api_key.reveal(), "xi-env")
        self.assertEqual(s.response_base_url, "http://127.0.0.1:9999/v1")
        self.assertEqual(s.control_socket, "/run/v.sock")
        self.assertEqual(
            parse_config({}, None, {"XI_API_KEY": "xi2"})
            .settings.tts.providers["elevenlabs"]
            .api_key.reveal(),
            "xi2",
        )


class TtsMergeTests(TestCase):
    """The core TTS block deep-merged under the plugin's, as upstream (seed doc examples)."""

    def tts(self, data):
        return parse_config(data, None, {}, named=False).settings.tts

    def test_core_only(self):
        tts = self.tts({"messages": {"tts": {"provider": "openai", "openai": {"voice": "nova"}}}})
        self.assertEqual(tts.provider, "openai")
        self.assertEqual(tts.providers["openai"].speaker_voice, "nova")

    def test_elevenlabs_override_for_calls(self):
        tts = self.tts(
            whole(
                {
                    "tts": {
                        "provider": "elevenlabs",
                        "elevenlabs": {"voiceId": "voice-1", "modelId": "eleven_flash_v2_5"},
                    }
                },
                messages={"tts": {"provider": "openai", "openai": {"voice": "alloy"}}},
            )
        )
        self.assertEqual(tts.provider, "elevenlabs")
        self.assertEqual(tts.providers["elevenlabs"].speaker_voice_id, "voice-1")
        self.assertEqual(tts.providers["openai"].speaker_voice, "alloy")

    def test_openai_model_override_keeps_the_core_voice(self):
        tts = self.tts(
            whole(
                {"tts": {"openai": {"model": "tts-1-hd"}}},
                messages={"tts": {"provider": "openai", "openai": {"voice": "onyx", "speed": 1.2}}},
            )
        )
        openai = tts.providers["openai"]
        self.assertEqual(
            (openai.model, openai.speaker_voice, openai.speed), ("tts-1-hd", "onyx", 1.2)
        )

    def test_top_level_tts_wins_over_messages_tts(self):
        tts = self.tts(
            {
                "tts": {"providers": {"openai": {"speakerVoice": "marin"}}},
                "messages": {"tts": {"provider": "openai", "openai": {"voice": "alloy"}}},
            }
        )
        self.assertEqual(tts.provider, "openai")
        self.assertEqual(tts.providers["openai"].speaker_voice, "marin")

    def test_core_keys_voicecalld_does_not_know_are_ignored_with_a_note(self):
        loaded = parse_config(
            whole({}, gateway={}, tts={"provider": "openai", "newCoreKnob": 1}), None, {}
        )
        self.assertEqual(["tts.newCoreKnob: unknown key"], [str(n) for n in loaded.notes])
        self.assertIn("tts.newCoreKnob: unknown key", error({"tts": {"newCoreKnob": 1}}))

    def test_edge_becomes_microsoft(self):
        tts = self.tts({"messages": {"tts": {"provider": "edge", "edge": {"voice": "en-US-Aria"}}}})
        self.assertEqual(tts.provider, "microsoft")
        self.assertEqual(tts.providers["microsoft"].speaker_voice, "en-US-Aria")

    def test_deep_merge_rules(self):
        base = {"a": {"b": 1, "c": [1, 2]}, "x": 1}
        over = {
            "a": {"c": [3], "d": 4},
            "__proto__": {"polluted": 1},
            "y": {"constructor": 1, "ok": 2},
        }
        self.assertEqual(
            deep_merge(base, over), {"a": {"b": 1, "c": [3], "d": 4}, "x": 1, "y": {"ok": 2}}
        )


class LegacyTests(TestCase):
    """Old keys are read as new ones, with a note; current keys win."""

    def test_both_present_current_wins(self):
        loaded = parse_config(
            {"fromNumber": "+15550001111", "twilio": {"from": "+15550002222"}}, None, {}
        )
        self.assertEqual(loaded.settings.from_number, "+15550001111")
        self.assertIn("fromNumber is also set and wins", str(loaded.notes[0]))

    def test_provider_log_is_mock(self):
        loaded = parse_config({"provider": "log"}, None, {})
        self.assertEqual(loaded.settings.provider, "mock")

    def test_dropped_tts_keys(self):
        loaded = parse_config({"tts": {"voice": "alloy", "model": "tts-1"}}, None, {})
        self.assertEqual(len(loaded.notes), 2)


class RedactionTests(TestCase):
    """Secrets never show themselves."""

    def test_secret_formats_as_redacted(self):
        secret = Secret("hunter2")
        for shown in (str(secret), repr(secret), f"{secret}", f"{secret!r}"):
            self.assertNotIn("hunter2", shown)
        s = parse_config(
            {
                "provider": "twilio",
                "fromNumber": "+15550001111",
                "twilio": {"accountSid": "AC1", "authToken": "hunter2"},
                "tts": {"providers": {"custom": {"apiKey": "k2", "other": "v"}}},
            },
            None,
            {},
        ).settings
        self.assertNotIn("hunter2", repr(s))
        effective = unstructure(s)
        self.assertEqual(effective["twilio"]["authToken"], REDACTED)
        self.assertEqual(
            effective["tts"]["providers"]["custom"], {"apiKey": REDACTED, "other": "v"}
        )
        self.assertEqual(unstructure(s, redact=False)["twilio"]["authToken"], "hunter2")

    def test_unbuilt_features_are_named(self):
        loaded = parse_config({"silenceTimeoutMs": 500, "store": "~/calls"}, None, {})
        notes = unbuilt_notes(loaded)
        self.assertEqual([n.split(":")[0] for n in notes], ["silenceTimeoutMs", "store"])
