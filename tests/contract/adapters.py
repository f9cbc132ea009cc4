"""
One adapter per carrier: the carrier's rig (the real provider and call
manager against its fake) behind the few verbs the contract scenarios use.

Each adapter reuses the rig its carrier's own tests use; what differs
between carriers (how the carrier's own voice is logged, how a caller
speaks to its speech recognition, how a refusal looks) is answered here.
"""

from __future__ import annotations

import uuid
from typing import Any
from xml.etree import ElementTree

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.unit import rigs, test_plivo, test_telnyx
from voicecalld.calls import lifecycle
from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.manager import CallManager
from voicecalld.providers.plivo import provider as plivo_provider
from voicecalld.values.states import CallState

#: The number every outbound call of the contract dials, and the app's own number.
TO = "+15551234567"
FROM = "+15550001111"


class Adapter:
    """What every carrier's adapter offers; subclasses fill in the carrier's ways."""

    name = ""
    #: The rig class of the carrier's own tests.
    rig_class: Any = None
    #: How a caller's hang-up ends a call: carriers report a normal end ("completed").
    caller_hangup_state = CallState.COMPLETED

    def __init__(self, test: TestCase) -> None:
        self.test = test
        self.rig: Any = None

    def start(self, config: dict[str, Any], streaming: bool, realtime: Any = None) -> Deferred:
        """Build and start the carrier's rig (with a realtime voice, if given); fires with this."""
        options = {"realtime": realtime} if realtime is not None else {}
        d = self.rig_class(self.test, config, streaming, **options).start()
        return d.addCallback(self._started)

    def _started(self, rig: Any) -> Adapter:
        self.rig = rig
        return self

    @property
    def fake(self) -> Any:
        return self.rig.fake

    @property
    def manager(self) -> CallManager:
        return self.rig.manager

    @property
    def notices(self) -> list[Any]:
        return self.rig.notices

    def place(self, message: str | None = "Hello from voicecalld", mode: str = "notify"):
        """Place a call through the manager; fires with its record."""
        return Deferred.fromCoroutine(self.manager.initiate(TO, message, mode))

    def record(self, call_id: str) -> Deferred:
        """The call's record as the manager reports it."""
        return Deferred.fromCoroutine(self.manager.get(call_id))

    def heard(self, call: Any) -> list[str]:
        """What the carrier said in the call in its own voice, in order."""
        raise NotImplementedError

    def listening(self, call: Any) -> Deferred:
        """Fires once the carrier listens to the caller (its own recognition)."""
        raise NotImplementedError

    def caller_says(self, call: Any, words: str) -> Deferred:
        """The caller says C{words} to the carrier's recognition."""
        return call.say(words)

    def caller_presses(self, call: Any, digit: str) -> Deferred:
        """The caller presses one key (on the media stream, if the call has one)."""
        return call.press(digit)

    def inbound(self, from_: str) -> Deferred:
        """Someone calls the app's number from C{from_}; fires with the fake's call."""
        raise NotImplementedError

    def refused(self, call: Any) -> bool:
        """Whether the carrier was told to refuse C{call}."""
        raise NotImplementedError

    def hooks(self, call: Any) -> list[Any]:
        """The webhooks the carrier sent for C{call} (each has a C{code})."""
        return call.callbacks

    def resend(self, call: Any) -> Deferred:
        """Send C{call}'s last webhook again, byte for byte; fires with the new hook."""
        return self.fake.resend_last_callback(call)

    def fail_next_dial(self, status: int) -> None:
        """The carrier answers the next dial with an HTTP C{status} error."""
        raise NotImplementedError

    def carrier_live(self, call: Any) -> bool:
        """Whether the carrier's call list still has C{call} up."""
        return call.is_live

    def carrier_id(self, call: Any) -> str:
        """The carrier's own id of C{call}."""
        raise NotImplementedError

    def lookups(self, call: Any) -> int:
        """How many times the carrier's REST API was asked about C{call}."""
        key = self.carrier_id(call)
        return len([r for r in self.fake.requests if r.method == "GET" and key in r.path])

    def dtmf_sent(self, call: Any) -> list[str]:
        """The touch tones the carrier was told to play into C{call} (not in-band audio)."""
        return list(call.dtmf_sent)

    def stream_keys(self, stream: Any) -> dict[str, str]:
        """The parameters our stream URL or start asked the carrier to pass back."""
        return stream.custom_parameters

    # Answering-machine detection.

    #: Whether the carrier reports the end of a machine's greeting (its beep).
    reports_beep = True

    def detection_asked(self, call: Any) -> dict[str, Any]:
        """The answering-machine detection parameters of the dial request (empty: none)."""
        raise NotImplementedError

    def answer_as(self, call: Any, callee: str) -> Deferred:
        """
        C{callee} picks up (C{human}, C{machine} or C{unknown}) and detection
        says so; a machine's greeting is still playing when this fires.
        """
        raise NotImplementedError

    def beep(self, call: Any) -> Deferred:
        """The machine's greeting ends (the beep), as the carrier reports it."""
        raise NotImplementedError

    def machine_reported(self, call: Any) -> Deferred:
        """Whatever more it takes, after L{answer_as} a machine, for the carrier to say so."""
        return Deferred.fromCoroutine(_nothing())

    def resend_detection(self, call: Any) -> Deferred:
        """The carrier's last detection callback for C{call}, sent again byte for byte."""
        raise NotImplementedError

    def transferred_to(self, call: Any) -> tuple[str, str | None] | None:
        """Whom the carrier dialled for a transfer of C{call} (E.164), and from which number."""
        raise NotImplementedError

    def transfer_wire(self, call: Any) -> dict[str, Any]:
        """The transfer as the carrier was asked for it, in the carrier's own words."""
        raise NotImplementedError

    def fail_next_transfer(self) -> None:
        """The carrier refuses the next transfer request (HTTP 400)."""
        raise NotImplementedError

    def person_answers(self, call: Any) -> Deferred:
        """The person C{call} was transferred to answers."""
        return Deferred.fromCoroutine(_nothing())

    def person_hangs_up(self, call: Any) -> Deferred:
        """The person C{call} was transferred to hangs up."""
        return call.person_hangs_up()

    def person_does_not_answer(self, call: Any) -> Deferred:
        """The person C{call} is being transferred to never answers."""
        return call.person_hangs_up()

    @inlineCallbacks
    def restart(self):
        """
        A new call manager over the same store and provider, as after a
        restart: it restores the stored calls and asks the carrier about them.
        """
        rig = self.rig
        rig.manager.stop()
        hub = NoticeHub()
        hub.listen(rig.notices.append)
        rig.manager = CallManager(
            settings=rig.settings,
            store=rig.store,
            provider=rig.provider,
            clock=reactor,
            hub=hub,
            new_id=lambda: str(uuid.uuid4()),
        )
        rig.provider.start(rig.manager.handle_event, rig.manager.directory)
        yield Deferred.fromCoroutine(rig.manager.restore())
        rig.manager.start()


class TwilioAdapter(Adapter):
    """Twilio: TwiML <Say>/<Gather>, status callbacks, Media Streams."""

    name = "twilio"
    rig_class = rigs.Rig

    def start(self, config: dict[str, Any], streaming: bool, realtime: Any = None) -> Deferred:
        # A call screened by answering-machine detection holds on <Pause>
        # until the result: those pauses run in real time (the result's REST
        # update cuts them short), where elsewhere they are instant.
        screened = bool(config.get("outbound", {}).get("machineDetection"))
        rig = self.rig_class(
            self.test, config, streaming, 1.0 if screened else 0.0, realtime=realtime
        )
        return rig.start().addCallback(self._started)

    def heard(self, call: Any) -> list[str]:
        return [v.text for v in call.verbs_named("Say")]

    def listening(self, call: Any) -> Deferred:
        return call.when_gathering()

    def caller_says(self, call: Any, words: str) -> Deferred:
        return call.gather_result(words)

    def caller_presses(self, call: Any, digit: str) -> Deferred:
        if call.stream is not None:
            call.stream.send_dtmf(digit)
            return Deferred.fromCoroutine(_nothing())
        return call.gather_digits(digit)

    def inbound(self, from_: str) -> Deferred:
        # The number's status callback (set in Twilio's console) is our webhook.
        return self.fake.inbound_call(from_, FROM, self.rig.url, status_callback=self.rig.url)

    def refused(self, call: Any) -> bool:
        return [v.name for v in call.verbs] == ["Reject"]

    def fail_next_dial(self, status: int) -> None:
        self.fake.fail_next("create", status, 21211 if status < 500 else 20500, "Told to fail")

    def fail_next_transfer(self) -> None:
        self.fake.fail_next("update", 400, 21220, "Told to fail")

    def stream_keys(self, stream: Any) -> dict[str, str]:
        return stream.parameters

    def carrier_id(self, call: Any) -> str:
        return call.sid

    def transferred_to(self, call: Any) -> tuple[str, str | None] | None:
        dialled = call.dialled
        return (dialled.number, dialled.caller_id) if dialled is not None else None

    def transfer_wire(self, call: Any) -> dict[str, Any]:
        # One call update with inline TwiML: <Dial callerId><Number statusCallback ...>.
        (update,) = [
            r
            for r in self.fake.requests
            if r.method == "POST"
            and r.path.endswith(f"/Calls/{call.sid}.json")
            and "<Dial" in (r.get("Twiml") or "")
        ]
        root = ElementTree.fromstring(update.get("Twiml"))
        (dial,) = root
        (number,) = dial
        return {
            "verbs": [e.tag for e in root],
            "callerId": dial.get("callerId"),
            "number": number.text,
            "events": number.get("statusCallbackEvent"),
            "callback": number.get("statusCallback"),
            "timeLimit": update.get("TimeLimit"),
        }

    def person_answers(self, call: Any) -> Deferred:
        return call.person_answers()

    def dtmf_sent(self, call: Any) -> list[str]:
        return [v.attrs["digits"] for v in call.verbs_named("Play") if v.attrs.get("digits")]

    def detection_asked(self, call: Any) -> dict[str, Any]:
        names = ("MachineDetection", "AsyncAmd", "AsyncAmdStatusCallback")
        return {n: call.create_request.get(n) for n in names if call.create_request.get(n)}

    @inlineCallbacks
    def answer_as(self, call: Any, callee: str):
        yield call.answer()
        if callee != "machine":  # DetectMessageEnd reports a machine at its beep
            yield call.detect(callee)

    def beep(self, call: Any) -> Deferred:
        return call.detect("machine")

    def machine_reported(self, call: Any) -> Deferred:
        return call.detect("machine")

    def resend_detection(self, call: Any) -> Deferred:
        hook = [h for h in call.webhooks if h.kind == "amd"][-1]
        return self.fake.resend_last_callback(call, hook)


class TelnyxAdapter(Adapter):
    """Telnyx: Call Control commands (speak, transcription), signed JSON webhooks."""

    name = "telnyx"
    rig_class = test_telnyx.Rig

    def heard(self, call: Any) -> list[str]:
        return list(call.spoken)

    def listening(self, call: Any) -> Deferred:
        # Telnyx transcribes only while we wait for words; before that, "listening"
        # is the end of everything said so far.
        return call.when_webhook("call.speak.ended", len(call.playbacks))

    @inlineCallbacks
    def caller_says(self, call: Any, words: str):
        yield call.when_transcribing()
        yield call.say(words, interim=True)

    def inbound(self, from_: str) -> Deferred:
        return self.fake.inbound_call(from_, FROM)

    def refused(self, call: Any) -> bool:
        return bool(call.commands_named("reject")) and not call.commands_named("answer")

    def hooks(self, call: Any) -> list[Any]:
        return call.webhooks

    def resend(self, call: Any) -> Deferred:
        return self.fake.resend(call.webhooks[-1])

    def fail_next_dial(self, status: int) -> None:
        self.fake.fail_next("dial", status, "10015" if status < 500 else "90000")

    def fail_next_transfer(self) -> None:
        self.fake.fail_next("transfer", 422, "90018")

    def carrier_live(self, call: Any) -> bool:
        return call.is_alive

    def carrier_id(self, call: Any) -> str:
        return call.call_control_id

    def detection_asked(self, call: Any) -> dict[str, Any]:
        return {} if call.amd == "disabled" else {"answering_machine_detection": call.amd}

    def answer_as(self, call: Any, callee: str) -> Deferred:
        return call.answer(machine={"unknown": "not_sure"}.get(callee, callee))

    def beep(self, call: Any) -> Deferred:
        return call.machine_greeting_ended("beep_detected")

    def resend_detection(self, call: Any) -> Deferred:
        kinds = ("call.machine.detection.ended", "call.machine.greeting.ended")
        hook = [h for h in call.webhooks if h.event_type in kinds][-1]
        return self.fake.resend(hook)

    def transferred_to(self, call: Any) -> tuple[str, str | None] | None:
        if not call.transfers:
            return None
        return call.transfers[-1]["to"], call.transfers[-1].get("from")

    def person_does_not_answer(self, call: Any) -> Deferred:
        return call.person_does_not_answer()

    def transfer_wire(self, call: Any) -> dict[str, Any]:
        (command,) = call.commands_named("transfer")
        return {k: v for k, v in command.body.items() if k != "command_id"}

    def person_answers(self, call: Any) -> Deferred:
        return call.person_answers()


class PlivoAdapter(Adapter):
    """Plivo: XML <Speak>/<GetInput>, V3-signed callbacks, audio streams."""

    name = "plivo"
    rig_class = test_plivo.Rig

    def heard(self, call: Any) -> list[str]:
        return [e.text for e in call.elements_named("Speak")]

    def listening(self, call: Any) -> Deferred:
        return call.when_listening()

    def caller_presses(self, call: Any, digit: str) -> Deferred:
        if call.stream is not None:
            return Deferred.fromCoroutine(_nothing(call.stream.send_dtmf(digit)))
        return call.press(digit)

    def inbound(self, from_: str) -> Deferred:
        return self.fake.inbound_call(from_, FROM, self.rig.url, hangup_url=self.rig.url)

    def refused(self, call: Any) -> bool:
        return [e.name for e in call.elements] == ["Hangup"]

    def fail_next_dial(self, status: int) -> None:
        self.fake.fail_next("create", status, "told to fail")

    def fail_next_transfer(self) -> None:
        self.fake.fail_next("transfer", 400, "told to fail")

    def stream_keys(self, stream: Any) -> dict[str, str]:
        return stream.extra_headers

    def carrier_id(self, call: Any) -> str:
        return call.call_uuid

    # Plivo reports no beep: the message follows the call core's beep wait,
    # shortened here to nothing (its length is the core tests' business).
    reports_beep = False

    def detection_asked(self, call: Any) -> dict[str, Any]:
        names = ("machine_detection", "machine_detection_url")
        return {n: call.create_request.get(n) for n in names if call.create_request.get(n)}

    @inlineCallbacks
    def answer_as(self, call: Any, callee: str):
        self.test.patch(lifecycle, "BEEP_WAIT", 0.0)
        if callee != "machine":
            # Plivo reports machines only: the provider says "person" when
            # none is reported in time, shortened here to nothing.
            self.test.patch(plivo_provider, "NO_MACHINE_AFTER", 0.0)
        yield call.answer()
        if callee == "machine":
            yield call.detect(callee)

    def beep(self, call: Any) -> Deferred:
        return Deferred.fromCoroutine(_nothing())

    def resend_detection(self, call: Any) -> Deferred:
        hook = [h for h in call.callbacks if h.kind == "machine"][-1]
        return self.fake.resend_last_callback(call, hook)

    def transferred_to(self, call: Any) -> tuple[str, str | None] | None:
        if call.dialled is None:
            return None
        return "+" + call.dialled, call.dialled_from and "+" + call.dialled_from

    def transfer_wire(self, call: Any) -> dict[str, Any]:
        # The A leg pointed at our transfer URL, which Plivo fetched (signed) for <Dial>.
        (transfer,) = [
            r
            for r in self.fake.requests
            if r.method == "POST"
            and r.path.endswith(f"/Call/{call.call_uuid}/")
            and "type=transfer" in str(r.get("aleg_url"))
        ]
        (fetch,) = [c for c in call.callbacks if c.url == transfer.get("aleg_url")]
        return {
            "legs": transfer.get("legs"),
            "method": transfer.get("aleg_method"),
            "signed": "X-Plivo-Signature-V3" in fetch.headers,
            "answer": (fetch.code, fetch.response.decode()),
        }


async def _nothing(result: Any = None) -> Any:
    if isinstance(result, Deferred):
        return await result
    return result
