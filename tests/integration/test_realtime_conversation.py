"""
A whole realtime Twilio call through the real daemon process: the fake
Twilio and a fake OpenAI Realtime speech-to-speech endpoint (and the chat
fake, which answers the model's first consult as the fallback responder; a
responder registered on the control socket answers the next) on 127.0.0.1;
the daemon is C{twistd -n voicecalld} with C{realtime.enabled}, driven with
the real C{voicecall} CLI.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue

from tests.fakes.openai_s2s import FakeS2SServer
from tests.integration import test_twilio_conversation as twilio_rig
from tests.integration.daemon import VOICECALL
from tests.waiting import wait_for
from voicecalld.control import commands as c
from voicecalld.control.client import ControlClient, connect
from voicecalld.realtime.interface import CONSULT_TOOL, END_CALL_TOOL

pytestmark = pytest.mark.integration

KEY = "sk-realtime-key-do-not-log"
GREETING = "Hello, this is Ada from Luigi's about your booking."


class RealtimeConversation(twilio_rig.TwilioConversation):
    """The Twilio rig with C{realtime} on (OpenAI, g711_ulaw) instead of streaming."""

    test_outbound_conversation = None  # type: ignore[assignment]
    test_kill_9_mid_call_and_restart = None  # type: ignore[assignment]
    test_provider_error_and_guard = None  # type: ignore[assignment]

    @inlineCallbacks
    def start_daemon(self):
        if not hasattr(self, "vendor"):
            self.vendor = FakeS2SServer(reactor)
            url = yield self.vendor.start()
            self.addCleanup(self.vendor.stop)
            config = json.loads(self.config.read_text())
            plugin = config["plugins"]["entries"]["voice-call"]["config"]
            plugin["streaming"] = {"enabled": False}
            plugin["realtime"] = {
                "enabled": True,
                "provider": "openai",
                "providers": {"openai": {"apiKey": KEY, "baseUrl": url}},
            }
            self.config.write_text(json.dumps(config))
        yield super().start_daemon()

    def record_where(self, call_id, check, what):
        """Fires with the call's C{voicecall status} record once C{check(record)} holds."""
        state = {"record": None, "asking": False}

        def got(result):
            out, _err, code = result
            state["asking"] = False
            if code == 0:
                state["record"] = json.loads(out)

        def ready():
            record = state["record"]
            if record is not None and check(record):
                return record
            if not state["asking"]:
                state["asking"] = True
                getProcessOutputAndValue(
                    VOICECALL, ("--json", "status", "--call-id", call_id), env=self.env
                ).addCallback(got)
            return None

        return wait_for(ready, what=what)

    @inlineCallbacks
    def test_a_whole_realtime_call(self):
        vendor = self.vendor
        out, _, _ = yield self.cli(
            "call", "--to", twilio_rig.TO, "--mode", "conversation", "--message", GREETING
        )
        call_id = out.strip()
        call = yield self.twilio.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        self.assertEqual(call.verbs_named("Say"), [])
        yield vendor.count("response.create", 1)
        self.assertIn(GREETING, vendor.response_requests[0]["instructions"])
        self.assertEqual(vendor.authorization, f"Bearer {KEY}")
        vendor.respond(b"\x10" * 4000, transcript=GREETING)
        yield stream.when_mark_echoed("r1:end")
        self.assertEqual(stream.outbound_audio, b"\x10" * 4000)

        # The caller speaks: mu-law passes to the model as is; its words and the reply are kept.
        yield stream.send_audio(b"\x55" * 1600)
        yield vendor.audio_at_least(1600)
        self.assertEqual(bytes(vendor.audio[:1600]), b"\x55" * 1600)
        vendor.speech_started()
        vendor.speech_stopped()
        vendor.completed("item_1", "Can we make it eight people?")
        vendor.respond(b"\x20" * 2400, transcript="Eight people, done.")
        yield stream.when_mark_echoed("r2:end")
        record = yield self.record_where(
            call_id,
            lambda r: r["transcript"][-1]["text"] == "Eight people, done.",
            "the model's reply in the record",
        )
        said = [(e["speaker"], e["text"]) for e in record["transcript"]]
        self.assertEqual(
            said,
            [
                ("bot", GREETING),
                ("user", "Can we make it eight people?"),
                ("bot", "Eight people, done."),
            ],
        )

        # voicecall speak goes through the model.
        speaking = getProcessOutputAndValue(
            VOICECALL,
            ("speak", "--call-id", call_id, "--message", "The table is by the window."),
            env=self.env,
        )
        yield vendor.count("response.create", 2)
        self.assertIn("The table is by the window.", vendor.response_requests[1]["instructions"])
        vendor.respond(b"\x30" * 1600, transcript="The table is by the window.")
        _out, err, code = yield speaking
        self.assertEqual(code, 0, err)

        # A consult with no responder registered: the chat fallback answers it.
        vendor.function_call("fc-1", CONSULT_TOOL, json.dumps({"question": "Is there parking?"}))
        yield vendor.when(lambda: any(i["type"] == "function_call_output" for i in vendor.items))
        (output,) = [i for i in vendor.items if i["type"] == "function_call_output"]
        self.assertEqual(output["call_id"], "fc-1")
        self.assertEqual(
            json.loads(output["output"]),
            {"answer": "A table for two at eight works. Anything else?"},
        )
        question = self.chat.requests[-1]["body"]["messages"][-1]["content"]
        self.assertIn("Is there parking?", question)
        yield vendor.count("response.create", 3)

        # A responder registered on the control socket (as the gateway's shim is) answers next.
        asked = []

        def consult(callId, call, question, context):
            asked.append((callId, question))
            return {"text": "Yes, behind the restaurant."}

        responder = ControlClient(on_consult=consult)
        yield Deferred.fromCoroutine(connect(reactor, str(self.socket), responder))
        self.addCleanup(responder.transport.loseConnection)
        yield responder.callRemote(c.RegisterResponder, name="test")
        vendor.function_call("fc-3", CONSULT_TOOL, json.dumps({"question": "Where exactly?"}))
        yield vendor.when(
            lambda: any(i.get("call_id") == "fc-3" for i in vendor.items if "output" in i)
        )
        (answer,) = [i for i in vendor.items if i.get("call_id") == "fc-3" and "output" in i]
        self.assertEqual(json.loads(answer["output"]), {"answer": "Yes, behind the restaurant."})
        self.assertEqual(asked, [(call_id, "Where exactly?")])
        yield vendor.count("response.create", 4)

        # Barge-in: Twilio is told to clear and the item is cut to what was heard.
        vendor.start_response()
        vendor.send_audio(b"\x40" * 24000, chunks=30, item="item_long")
        played = len(stream.outbound_audio)
        yield stream.when_audio(played + 4000)
        vendor.speech_started()
        yield stream.when_clear()
        yield vendor.when(lambda: vendor.truncations)
        (cut,) = vendor.truncations
        self.assertEqual(cut["item_id"], "item_long")
        self.assertGreater(cut["audio_end_ms"], 0)
        self.assertLess(cut["audio_end_ms"], 3000)

        # Goodbye, then openclaw_end_call: the words play, then Twilio hangs up.
        vendor.start_response()
        vendor.send_audio(b"\x50" * 3200, chunks=4, item="item_bye")
        vendor.transcript("Goodbye!", item="item_bye")
        fc = {
            "id": "item_fc_bye",
            "type": "function_call",
            "call_id": "fc-2",
            "name": END_CALL_TOOL,
            "arguments": "{}",
        }
        vendor.finish_response(output=[{"id": "item_bye", "type": "message"}, fc])
        yield call.when_ended()
        self.assertTrue(stream.outbound_audio.endswith(b"\x50" * 3200))
        record = yield self.record_where(
            call_id, lambda r: r["state"] == "hangup-bot", "the call ended by the model"
        )
        self.assertEqual(record["transcript"][-1]["text"], "Goodbye!")
        yield vendor.when(lambda: not vendor.connected)
        log = self.log.read_text()
        for secret in (KEY, *twilio_rig.SECRETS.values()):
            self.assertNotIn(secret, log)
