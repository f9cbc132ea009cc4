"""
Plivo end to end, in one process: our webhook site on 127.0.0.1 (Plivo's
callbacks and audio streams reach it there), Plivo's REST API as the fake's
resource through StubTreq, the real call manager and store, and TTS/STT
doubles.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase

from tests.fakes.plivo import FakePlivo
from tests.fakes.tts import ToneTTS
from tests.unit.rigs import ScriptedSTT
from tests.waiting import wait_for
from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.manager import CallManager
from voicecalld.config import parse_config
from voicecalld.errors import ProviderError
from voicecalld.providers.plivo.provider import PlivoProvider
from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner
from voicecalld.values.record import USER
from voicecalld.values.states import CallState
from voicecalld.web.guard import GuardedSite
from voicecalld.web.site import build_root

AUTH_ID = "MA" + "A1B2C3D4E5F6G7H8I9"
TOKEN = "plivo-test-auth-token"
TO = "+15551234567"


def query(url: str) -> dict[str, str]:
    """The query of a URL we gave Plivo."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


class Rig:
    """Everything wired as the daemon wires it; a second rig over the same store is a restart."""

    def __init__(
        self,
        test: TestCase,
        config: dict[str, Any] | None = None,
        streaming: bool = False,
        *,
        fake: FakePlivo | None = None,
        store_path: str | None = None,
        port: int = 0,
        realtime: Any = None,
    ) -> None:
        self.test = test
        self.realtime = realtime
        config = config or {}
        if realtime is not None:
            streaming = False
            config = {
                "inboundPolicy": "open",
                **config,
                "realtime": {"enabled": True, **config.get("realtime", {})},
            }
        self.config = config
        self.streaming = streaming
        self.fake = fake
        self.store_path = store_path or test.mktemp()
        self.port_number = port
        self.notices: list[Any] = []
        self.ids: list[str] = []

    @inlineCallbacks
    def start(self):
        if self.fake is None:
            self.fake = FakePlivo(AUTH_ID, TOKEN, insecure_ws=True)
            self.test.addCleanup(self.fake.stop)
        config = {
            "provider": "plivo",
            "fromNumber": "+15550001111",
            "plivo": {"authId": AUTH_ID, "authToken": TOKEN, "apiBaseUrl": "https://plivo.test"},
            "streaming": {"enabled": self.streaming},
            **self.config,
        }
        self.settings = parse_config(config, None, {}).settings
        self.tts = ToneTTS(reactor)
        self.stt = ScriptedSTT()
        self.provider = PlivoProvider(
            self.settings,
            reactor,
            public_url="http://placeholder/voice/webhook",
            http=StubTreq(self.fake.resource),
            tts=self.tts if self.streaming else None,
            stt=self.stt if self.streaming else None,
            realtime=self.realtime,
        )
        self.store = SQLiteCallStore(self.store_path, SynchronousRunner())
        yield self.store.open()
        hub = NoticeHub()
        hub.listen(self.notices.append)
        self.manager = CallManager(
            settings=self.settings,
            store=self.store,
            provider=self.provider,
            clock=reactor,
            hub=hub,
            new_id=self.new_id,
        )
        self.provider.start(self.manager.handle_event, self.manager.directory)
        self.resources = self.provider.web_resources()
        site = GuardedSite(build_root(self.resources), reactor=reactor)
        endpoint = TCP4ServerEndpoint(reactor, self.port_number, interface="127.0.0.1")
        self.port = yield endpoint.listen(site)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/voice/webhook"
        self.provider.use_public_url(self.url, known=True)
        yield Deferred.fromCoroutine(self.manager.restore())
        self.manager.start()
        self.test.addCleanup(self.stop)
        return self

    @inlineCallbacks
    def stop(self):
        """Stop this daemon (as in a crash: the store keeps what it has) and its sockets."""
        if self.port is None:
            return
        self.manager.stop()
        self.provider.stop()
        port, self.port = self.port, None
        yield port.stopListening()
        yield wait_for(
            lambda: (
                not self.provider.media.factory.open
                and all(hook.code is not None or hook.error for hook in self.fake.callbacks)
            )
        )
        # autobahn's close-handshake timers go away a moment after the sockets.
        yield wait_for(
            lambda: (
                not any(
                    "_notify_bucket" in repr(getattr(c, "func", None))
                    for c in reactor.getDelayedCalls()
                )
            )
        )

    def restarted(self, config: dict[str, Any] | None = None) -> Rig:
        """A new daemon over this one's store, fake Plivo and port (call L{stop} first)."""
        port = urlsplit(self.url).port
        return Rig(
            self.test,
            config or self.config,
            self.streaming,
            fake=self.fake,
            store_path=self.store_path,
            port=port,
        )

    def new_id(self) -> str:
        self.ids.append(str(uuid.uuid4()))
        return self.ids[-1]

    def initiate(self, message: str | None = "Hello from voicecalld", mode: str = "notify"):
        return Deferred.fromCoroutine(self.manager.initiate(TO, message, mode))

    def record(self, call_id: str):
        return Deferred.fromCoroutine(self.manager.get(call_id))

    def rest(self, method: str, tail: str = "") -> list[Any]:
        """The fake's REST requests of C{method} whose path ends with C{tail}."""
        return [r for r in self.fake.requests if r.method == method and r.path.endswith(tail)]


class Calls(TestCase):
    """Making, answering and ending calls over Plivo's REST API and callbacks."""

    timeout = 30

    @inlineCallbacks
    def test_make_call_then_the_call_uuid_replaces_the_request_uuid(self):
        rig = yield Rig(self, {"ringTimeoutMs": 45000}).start()
        record = yield rig.initiate("Your parcel has arrived.")
        (create,) = rig.rest("POST", "/Call/")
        self.assertTrue(create.auth_ok)
        self.assertEqual(create.get("to"), TO.lstrip("+"))
        self.assertEqual(create.get("from"), "15550001111")
        self.assertEqual((create.get("ring_timeout"), create.get("hangup_on_ring")), (45, 45))
        for kind in ("answer", "hangup", "ring"):
            url = create.get(f"{kind}_url")
            self.assertEqual(query(url), {"callId": record.call_id, "type": kind})
        call = yield rig.fake.when_call(0)
        self.assertEqual(record.provider_call_id, call.request_uuid)
        yield call.ring()
        self.assertEqual(call.callbacks_of("ring")[0].code, 200)
        stored = yield rig.record(record.call_id)
        self.assertEqual(stored.state, CallState.RINGING)
        self.assertEqual(stored.provider_call_id, call.call_uuid)

    @inlineCallbacks
    def test_notify_call_speaks_and_hangs_up(self):
        rig = yield Rig(self, {"outbound": {"notifyHangupDelaySec": 0}}).start()
        record = yield rig.initiate("Your parcel has arrived.")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        yield call.when_ended()
        said = call.elements_named("Speak")
        self.assertEqual([e.text for e in said], ["Your parcel has arrived."])
        self.assertEqual(said[0].attrs["voice"], "Polly.Joanna")
        self.assertEqual(rig.fake.errors, [])
        self.assertEqual(len(rig.rest("DELETE", f"/Call/{call.call_uuid}/")), 1)
        self.assertEqual(call.status, "completed")
        yield wait_for(lambda: not rig.manager.live_calls())
        final = yield rig.record(record.call_id)
        self.assertEqual(final.state, CallState.HANGUP_BOT)
        self.assertEqual([e.text for e in final.transcript], ["Your parcel has arrived."])

    @inlineCallbacks
    def test_ending_a_ringing_call_cancels_its_request(self):
        rig = yield Rig(self).start()
        record = yield rig.initiate()
        call = yield rig.fake.when_call(0)
        yield call.ring()
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))
        self.assertEqual(len(rig.rest("DELETE", f"/Request/{call.request_uuid}/")), 1)
        yield call.when_ended()
        self.assertEqual(call.status, "cancel")
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.HANGUP_BOT)

    @inlineCallbacks
    def test_ending_a_queued_call_cancels_it(self):
        rig = yield Rig(self).start()
        record = yield rig.initiate()
        call = yield rig.fake.when_call(0)
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))
        self.assertEqual(len(rig.rest("DELETE", f"/Request/{call.request_uuid}/")), 1)
        yield call.when_ended()
        self.assertEqual(call.status, "cancel")
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.HANGUP_BOT)

    @inlineCallbacks
    def test_busy_and_ring_timeout_end_the_call(self):
        rig = yield Rig(self, {"ringTimeoutMs": 5000}).start()
        busy = yield rig.initiate()
        call = yield rig.fake.when_call(0)
        yield call.busy()
        yield wait_for(lambda: len(rig.manager.live_calls()) == 0)
        self.assertEqual((yield rig.record(busy.call_id)).state, CallState.BUSY)
        unanswered = yield rig.initiate()
        second = yield rig.fake.when_call(1)
        yield second.no_answer()
        yield wait_for(lambda: len(rig.manager.live_calls()) == 0)
        self.assertEqual((yield rig.record(unanswered.call_id)).state, CallState.NO_ANSWER)

    @inlineCallbacks
    def test_rest_errors_are_provider_errors_with_plivos_message(self):
        rig = yield Rig(self).start()
        rig.fake.fail_next("create", 400, "invalid to number")
        failure = yield self.assertFailure(rig.initiate(), ProviderError)
        self.assertIn("invalid to number", str(failure))
        self.assertIn("HTTP 400", str(failure))
        (record,) = yield Deferred.fromCoroutine(rig.manager.recent(5))
        self.assertEqual(record.state, CallState.FAILED)
        rig.fake.fail_next("create", 500)
        failure = yield self.assertFailure(rig.initiate(), ProviderError)
        self.assertTrue(failure.retryable)
        self.assertEqual(len(rig.rest("POST", "/Call/")), 2)

    @inlineCallbacks
    def test_wrong_credentials_are_a_provider_error(self):
        rig = yield Rig(self).start()
        rig.fake.auth_token = "another-token"
        failure = yield self.assertFailure(rig.initiate(), ProviderError)
        self.assertIn("authentication failed", str(failure))
        self.assertEqual(failure.status, 401)

    @inlineCallbacks
    def test_a_draining_daemon_answers_callers_busy(self):
        rig = yield Rig(self, {"inboundPolicy": "open"}).start()
        rig.manager.begin_drain()
        refused = yield rig.fake.inbound_call("+15557654321", "+15550001111", rig.url)
        self.assertEqual(
            [(e.name, e.attrs.get("reason")) for e in refused.elements], [("Hangup", "busy")]
        )
        self.assertEqual(rig.manager.live_calls(), [])

    @inlineCallbacks
    def test_inbound_allowed_and_refused(self):
        rig = yield Rig(
            self,
            {
                "inboundPolicy": "allowlist",
                "allowFrom": ["+15557654321"],
                "inboundGreeting": "Welcome to Acme.",
            },
        ).start()
        refused = yield rig.fake.inbound_call("+15550000999", "+15550001111", rig.url)
        self.assertEqual([e.name for e in refused.elements], ["Hangup"])
        self.assertEqual(refused.status, "no-answer")
        accepted = yield rig.fake.inbound_call(
            "+15557654321", "+15550001111", rig.url, hangup_url=rig.url
        )
        yield accepted.when_listening()
        self.assertEqual([e.text for e in accepted.elements_named("Speak")], ["Welcome to Acme."])
        (live,) = rig.manager.live_calls()
        self.assertEqual((live.direction, live.from_number), ("inbound", "+15557654321"))
        self.assertEqual(live.provider_call_id, accepted.call_uuid)
        yield accepted.caller_hangup()
        yield wait_for(lambda: not rig.manager.live_calls())
        self.assertEqual((yield rig.record(live.call_id)).state, CallState.COMPLETED)


class Webhooks(TestCase):
    """Signatures and replays: a refused or repeated callback changes nothing."""

    timeout = 30

    @inlineCallbacks
    def test_bad_or_missing_signature_is_refused_and_changes_nothing(self):
        rig = yield Rig(self).start()
        record = yield rig.initiate()
        call = yield rig.fake.when_call(0)
        rig.fake.signature_mode = "wrong"
        yield call.ring()
        self.assertEqual(call.callbacks[-1].code, 403)
        stored = yield rig.record(record.call_id)
        self.assertEqual(stored.state, CallState.INITIATED)
        self.assertEqual(stored.provider_call_id, call.request_uuid)
        rig.fake.signature_mode = "missing"
        hook = yield rig.fake.resend_last_callback(call)
        self.assertEqual(hook.code, 403)
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.INITIATED)

    @inlineCallbacks
    def test_v2_alone_is_accepted_and_rotated_tokens_too(self):
        rig = yield Rig(self).start()
        record = yield rig.initiate()
        call = yield rig.fake.when_call(0)
        rig.fake.signature_mode = "v2"
        yield call.ring()
        self.assertEqual(call.callbacks[-1].code, 200)
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.RINGING)
        rig.fake.signature_mode = "valid"
        rig.fake.other_tokens = ["another-active-token"]
        yield call.answer()
        self.assertEqual(call.callbacks_of("answer")[0].code, 200)
        self.assertIn(",", call.callbacks_of("answer")[0].signature)

    @inlineCallbacks
    def test_a_replayed_nonce_is_acknowledged_and_changes_nothing(self):
        rig = yield Rig(self, {"inboundPolicy": "open"}).start()
        record = yield rig.initiate("Hi!", "conversation")
        call = yield rig.fake.when_call(0)
        yield call.ring()
        before = rig.notices[:]
        hook = yield rig.fake.resend_last_callback(call)
        self.assertEqual(hook.code, 200)
        self.assertEqual(rig.notices, before)
        yield call.answer()
        yield call.when_listening()
        yield call.say("I need a taxi")
        yield call.when_listening()
        action = call.callbacks_of("action")[-1]
        self.assertEqual(action.code, 200)
        replayed = yield rig.fake.resend_last_callback(call)
        self.assertEqual((replayed.code, replayed.response), (200, action.response))
        live = rig.manager.live_calls()[0]
        self.assertEqual([e.text for e in live.transcript if e.speaker == USER], ["I need a taxi"])
        self.assertEqual(live.call_id, record.call_id)

    @inlineCallbacks
    def test_a_replay_after_a_restart_changes_nothing(self):
        first = yield Rig(self).start()
        record = yield first.initiate("Hi!", "conversation")
        call = yield first.fake.when_call(0)
        yield call.answer()
        yield call.when_listening()
        yield call.say("I need a taxi")
        yield call.when_listening()
        action = call.callbacks[-1]
        self.assertEqual(action.kind, "action")
        yield first.stop()
        # The new daemon's replay cache is empty; the stored dedupe keys are not.
        second = yield first.restarted().start()
        hook = yield first.fake.resend_last_callback(call)
        self.assertEqual(hook.code, 200)
        self.assertIn(b"<GetInput", hook.response)
        stored = yield second.record(record.call_id)
        words = [e.text for e in stored.transcript if e.speaker == USER]
        self.assertEqual(words, ["I need a taxi"])


class Restart(TestCase):
    """Calls found live in the store at start are asked about through the live-call lookup."""

    timeout = 30

    @inlineCallbacks
    def test_a_live_call_is_kept_and_an_ended_one_is_closed(self):
        first = yield Rig(self, {"maxConcurrentCalls": 2}).start()
        alive = yield first.initiate("Hi!", "conversation")
        call = yield first.fake.when_call(0)
        yield call.answer()
        yield call.when_listening()
        gone = yield first.initiate("Bye!", "conversation")
        other = yield first.fake.when_call(1)
        yield other.answer()
        yield other.when_listening()
        yield first.stop()
        yield other.caller_hangup()
        second = yield first.restarted().start()
        lookups = [r.path for r in first.fake.requests if ("status", "live") in r.query]
        self.assertIn(f"/v1/Account/{AUTH_ID}/Call/{call.call_uuid}/", lookups)
        self.assertEqual([c.call_id for c in second.manager.live_calls()], [alive.call_id])
        self.assertEqual((yield second.record(gone.call_id)).state, CallState.COMPLETED)
        # The reconciled call goes on: its next words are said through the new daemon.
        asking = Deferred.fromCoroutine(second.manager.continue_call(alive.call_id, "Still there?"))
        yield call.when_element("Speak", 2)
        self.assertEqual(call.elements_named("Speak")[-1].text, "Still there?")
        yield call.when_listening()
        yield call.say("Yes")
        self.assertEqual((yield asking), "Yes")
