"""
The document flow of carriers that run a markup document on each call
(Twilio's TwiML, Plivo's XML): without a media stream, each webhook is
answered with the next document, to say what is queued, listen, or hold.

Utterances wait in a queue until a document says them; the carrier's
C{played} callback settles them.  Moving a live call to its next document
(a REST update or a transfer) is the carrier's L{DocumentProvider.redirect}.
The markup module (C{say}, C{listen}, C{hold}, C{stream}, C{hangup}) is the
carrier's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from twisted.internet.defer import Deferred, succeed

from voicecalld.errors import ProviderError
from voicecalld.providers.common.carrier import CarrierCall, CarrierProvider
from voicecalld.providers.common.replay import Answer
from voicecalld.providers.common.webhook import Reading
from voicecalld.values.playback import Playback
from voicecalld.values.record import CONVERSATION, INBOUND, CallRecord

# How long a carrier whose stream ended while voicecalld stops waits before
# asking again (the next process answers it).
RESTART_HOLD_SECONDS = 1


class Utterance:
    """One utterance spoken with the carrier's own voice (no media stream)."""

    def __init__(self, number: int, text: str) -> None:
        self.number = number
        self.text = text
        self.done: Deferred[Playback] = Deferred()
        self.claimed = False


class DocumentCall(CarrierCall):
    """The wire state of a call that runs documents: what runs, what is being said."""

    def __init__(self, record: CallRecord) -> None:
        super().__init__(record)
        self.mode = record.mode
        self.initial_text = record.initial_message
        self.initial: Utterance | None = None
        self.document = "pending"
        self.waiting: list[Utterance] = []
        self.playing: list[Utterance] = []
        self.says = 0
        self.listening = False
        self.turn: str | None = None
        # Dialled with answering-machine detection and no result yet: the
        # call holds, saying nothing, until the call core speaks or listens.
        self.screening = record.screening

    def release(self) -> None:
        for say in [*self.playing, *self.waiting]:
            if not say.done.called:
                say.done.callback(Playback(say.text, "", complete=False))


class DocumentProvider(CarrierProvider):
    """
    A L{CarrierProvider} whose calls run documents.  Subclasses set
    C{markup}, C{input_type} (the C{type} of the listening action URL) and
    the C{update_failed} log message and code, and supply L{redirect} and
    L{stream_document}.
    """

    markup: ClassVar[Any]
    input_type: ClassVar[str]
    update_failed_message: ClassVar[str]
    update_failed_code: ClassVar[str]
    call_type: ClassVar[type[CarrierCall]] = DocumentCall
    voice: str

    def redirect(self, call: Any, record: CallRecord) -> None:
        """Move the live call to its next document."""
        raise NotImplementedError

    def stream_document(self, call: Any, carrier_id: str | None) -> str:
        """The document that connects the call to our media stream."""
        raise NotImplementedError

    def handover_document(self, call: Any) -> str:
        """The document that dials the person a transferred call was handed to."""
        raise NotImplementedError

    # -- IProvider ---------------------------------------------------------------

    def speak(self, record: CallRecord, text: str) -> Deferred:
        call = self._call(record)
        call.screening = False
        if self.streaming:
            return self.media.say(call.call_id, text)
        if call.initial is not None and not call.initial.claimed and text == call.initial.text:
            call.initial.claimed = True
            return call.initial.done
        call.says += 1
        say = Utterance(call.says, text)
        call.waiting.append(say)
        if text == call.initial_text and call.initial is None:
            call.initial, say.claimed = say, True
        if call.document != "pending":
            self.redirect(call, record)
        return say.done

    def start_listening(self, record: CallRecord, turn_token: str) -> Deferred:
        call = self._call(record)
        call.screening = False
        call.listening = True
        call.turn = turn_token
        if not self.streaming and call.document == "hold":
            self.redirect(call, record)
        return succeed(None)

    def stop_listening(self, record: CallRecord) -> Deferred:
        call = self._calls.get(record.call_id)
        if call is not None:
            call.listening = False
            call.turn = None
        return succeed(None)

    # -- webhooks (called by the dialect) -----------------------------------------

    def answer_document(self, call: Any, carrier_id: str | None) -> str:
        """
        The document for a call that was just answered (or whose stream
        ended); C{carrier_id} is the call's, from the carrier's request.
        """
        if call.handed_over is not None:
            # handed over, even once it ended for us: a late fetch must not undo it
            return self.handover_document(call)
        if call.ended:
            return self.markup.hangup()
        if self.streaming:
            call.document = "stream"
            return self.stream_document(call, carrier_id)
        if call.initial_text is not None and call.initial is None and not call.screening:
            call.says += 1
            call.initial = Utterance(call.says, call.initial_text)
            call.waiting.insert(0, call.initial)
        return self.document(call)

    def document(self, call: Any) -> str:
        """The next document for a call without a media stream: say, listen or hold."""
        if call.handed_over is not None:
            # handed over, even once it ended for us: a late fetch must not undo it
            return self.handover_document(call)
        if call.ended:
            return self.markup.hangup()
        if call.waiting:
            call.playing.extend(call.waiting)
            last = call.waiting[-1].number
            texts = [s.text for s in call.waiting]
            call.waiting = []
            call.document = "say"
            return self.markup.say(
                texts, self.voice, self.url(callId=call.call_id, type="played", utt=str(last))
            )
        if not call.screening and (
            call.mode == CONVERSATION or call.listening or call.direction == INBOUND
        ):
            call.document = "listen"
            query = {"callId": call.call_id, "type": self.input_type}
            if call.turn:
                query["turn"] = call.turn
            return self.markup.listen(self.url(**query), self.url(callId=call.call_id, type="idle"))
        call.document = "hold"
        return self.markup.hold(self.url(callId=call.call_id, type="idle"))

    def played(self, call: Any, number: int) -> None:
        """The carrier finished saying the utterances up to number C{number}."""
        still = []
        for say in call.playing:
            if say.number <= number:
                if not say.done.called:
                    say.done.callback(Playback(say.text, say.text))
            else:
                still.append(say)
        call.playing = still

    def restart_stream(self, call: Any, carrier_id: str | None) -> str:
        """A media stream ended while the call goes on: start another, a few times."""
        if call.handed_over is not None:
            return self.handover_document(call)
        if call.ended:
            return self.markup.hangup()
        if self._stopping:
            # A restart: the call is the next process's.  The carrier waits a
            # moment, then asks again (a new URL, not a retry of this request).
            again = self.url(
                callId=call.call_id,
                type="stream-ended",
                held=str(round(self.clock.seconds() * 1000)),
            )
            return self.markup.hold(again, RESTART_HOLD_SECONDS)
        if not self.streaming:
            return self.document(call)
        if not self.media.restart(call.call_id, carrier_id):
            return self.markup.hangup()
        return self.answer_document(call, carrier_id)

    # -- plumbing ----------------------------------------------------------------------

    def _update_failed(self, call: Any, moved: list[Utterance], failure: Any) -> None:
        """Moving the call failed: what the next document would have said fails too."""
        error = as_provider_error(failure)
        for say in moved:
            for queue in (call.waiting, call.playing):
                if say in queue:
                    queue.remove(say)
            if not say.done.called:
                say.done.errback(error)
        if not moved:
            self.log.warn(
                self.update_failed_message,
                call_id=call.call_id,
                error=error,
                log_code=self.update_failed_code,
            )


def flow_reading(
    provider: DocumentProvider,
    call: Any,
    hook_type: str | None,
    query: dict[str, str],
    carrier_id: str | None,
    answer: Callable[[str], Answer],
) -> Reading | None:
    """
    How the document flow reads a webhook that only moves it on: C{played}
    (utterances were said), C{idle} (a document ran out) or C{stream-ended};
    None for any other C{type}.  C{answer} wraps a document as the carrier's
    HTTP answer.
    """
    if hook_type == "played":

        def played() -> Answer:
            provider.played(call, _number(query.get("utt")))
            return answer(provider.document(call))

        return Reading(answer=played)
    if hook_type == "idle":
        return Reading(answer=lambda: answer(provider.document(call)))
    if hook_type == "stream-ended":
        return Reading(answer=lambda: answer(provider.restart_stream(call, carrier_id)))
    return None


def _number(value: str | None) -> int:
    try:
        return int(value or "0")
    except ValueError:
        return 0


def as_provider_error(failure: Any) -> ProviderError:
    """A L{ProviderError} as it is, or one for any other failure or exception."""
    value = getattr(failure, "value", failure)
    if isinstance(value, ProviderError):
        return value
    if hasattr(failure, "getErrorMessage"):
        return ProviderError(failure.getErrorMessage())
    return ProviderError(str(value))
