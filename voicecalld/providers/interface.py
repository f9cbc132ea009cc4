"""
What a telephony provider does for the call manager.

Twilio, Telnyx, Plivo and the mock all provide L{IProvider}.  Methods return
Deferreds and never block the reactor; failures are
L{voicecalld.errors.ProviderError} with the provider's own code and message.
Providers report what happens on their side as L{voicecalld.values.events}
values, through the sink given to L{IProvider.start}.  They keep only their
wire state, keyed by our call id, and find our call for a carrier's id in
the L{ICallDirectory} given with the sink (the live-call registry): the call
manager alone stores the carrier's id in a call's record.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class ICallDirectory(Interface):
    """Where a provider finds our call for the carrier's id of it (the live-call registry)."""

    def call_id_for(provider_call_id):
        """Our id of the live call the carrier knows as C{provider_call_id}, or None."""


class IProvider(Interface):
    """A telephony provider, as the call manager drives it."""

    name = Attribute("The provider id: 'mock', 'twilio', 'telnyx' or 'plivo'.")

    def start(sink, directory):
        """
        Begin reporting call events: C{sink(event)} takes a
        L{voicecalld.values.events.CallEvent} and returns a Deferred that fires
        once the manager has durably applied it.  C{directory} (an
        L{ICallDirectory}) finds our call id for a carrier's call id.
        """

    def stop():
        """Stop reporting events and release resources; may return a Deferred."""

    def place_call(record):
        """Dial C{record.to_number}; fires with the provider's call id."""

    def answer(record):
        """Answer an inbound call the manager accepted."""

    def reject(event, refusal):
        """
        Refuse an inbound call (an L{InboundCall} event) the manager did not
        accept, so that the caller hears C{refusal} (a L{Refusal}: busy or
        rejected) in the carrier's own form.
        """

    def hangup(record, reason):
        """Hang the call up (a call the provider no longer knows counts as done)."""

    def speak(record, text):
        """Say C{text} on the call; fires with a L{Playback} when it has been played."""

    def interrupt(record):
        """Stop what is being said now and drop what is queued (barge-in)."""

    def start_listening(record, turn_token):
        """
        A client's turn begins (before its prompt is said): make sure the
        caller's next words arrive as L{Speech} events, carrying
        C{turn_token} where the carrier echoes it back.
        """

    def stop_listening(record):
        """The turn is over: stop any listening started for it and forget its token."""

    def send_dtmf(record, digits):
        """Send touch tones to the far end (C{w} is a half-second pause)."""

    def transfer(record, to):
        """
        Hand the connected call to C{to} (E.164), a cold transfer: fires once
        the carrier took the request.  The carrier's confirmation arrives
        later as a L{Transferred} event or as the end of our leg.
        """

    def call_status(record):
        """Ask the provider about a restored call; fires with a L{CallStatus}."""

    def waits_for_media(record):
        """Whether the first words on this call wait for a media stream (not for answer)."""

    def use_public_url(url, known):
        """
        Calls and webhooks use C{url} from now on (the webhook's public URL);
        C{known} is False for the local fallback, whose host carriers cannot
        reach (signature checks then rebuild the URL from the request).
        """

    def web_resources():
        """
        The HTTP resources this provider serves, as a dict from path (such as
        C{serve.path} or C{streaming.streamPath}) to L{IResource}.
        """

    def forget(record):
        """The call is over: drop any state kept for it."""

    def realtime(record):
        """
        Whether the call runs as one realtime speech-to-speech session: the
        model answers the caller itself (no reply is asked for).
        """

    def tool_result(record, tool_call_id, output):
        """
        Answer the realtime model's function call C{tool_call_id} (a
        L{ToolCall} event) with C{output}, a JSON-able dict; dropped if the
        call's session is gone.
        """


class ISimulator(Interface):
    """A provider whose callers can be played from the control socket (the mock)."""

    def simulate_inbound(from_number, to_number):
        """Ring one of our numbers; fires with the new call id (or fails, if refused)."""

    def simulate_say(record, text):
        """The caller says C{text}."""

    def simulate_dtmf(record, digits):
        """The caller presses C{digits}."""

    def simulate_hangup(record):
        """The caller hangs up."""
