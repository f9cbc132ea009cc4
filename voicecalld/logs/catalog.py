"""
Every stable C{log_code} the daemon emits: its group, its level and what it
means.  Tests check that the source uses exactly these codes and that
docs/logs.md lists them; operators grep and alert on them.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class Code:
    """One stable code: C{code} (C{group.name}), its usual level and a one-line meaning."""

    code: str
    level: str
    meaning: str

    @property
    def group(self) -> str:
        """The part before the dot: webhook, media, control, guard, call, ..."""
        return self.code.split(".", 1)[0]


def _codes(*rows: tuple[str, str, str]) -> dict[str, Code]:
    return {code: Code(code, level, meaning) for code, level, meaning in rows}


CATALOG: dict[str, Code] = _codes(
    # webhook: the carrier-facing HTTP server (web/guard.py, providers/common/webhook.py)
    ("webhook.body_too_large", "warn", "a request body over the cap; answered 413"),
    ("webhook.header_timeout", "warn", "request headers did not arrive in time; answered 408"),
    ("webhook.body_timeout", "warn", "a request body did not arrive in time; answered 408"),
    ("webhook.rate_limited", "warn", "a peer over its request rate; answered 429"),
    ("webhook.too_many_in_flight", "warn", "a peer over its requests in flight; answered 429"),
    ("webhook.too_many_connections", "warn", "the server's connection cap is reached; 503"),
    ("webhook.header_too_large", "warn", "an over-long header line; answered 431"),
    ("webhook.bad_request", "warn", "malformed HTTP; answered 400"),
    ("webhook.bad_method", "warn", "a webhook request that is not a POST; answered 405"),
    ("webhook.malformed", "warn", "a webhook body the carrier's dialect cannot read; 400"),
    ("webhook.bad_signature", "warn", "a webhook whose signature matches no candidate URL; 403"),
    ("webhook.unverified", "warn", "a webhook accepted unchecked (skipSignatureVerification)"),
    ("webhook.replay", "info", "a webhook seen before; answered as the first time"),
    ("webhook.foreign_call", "warn", "a carrier call voicecalld did not place; hung up"),
    ("webhook.stopping", "warn", "a webhook only the next process can act on, while stopping; 503"),
    ("webhook.error", "critical", "applying a webhook failed (a bug); answered 500"),
    # media: carrier media-stream WebSockets (media/stream.py, media/session.py)
    ("media.too_many", "warn", "a media socket refused: streaming.maxConnections are open"),
    ("media.pending", "warn", "a media socket refused: too many are waiting for their start"),
    ("media.start_timeout", "warn", "a media socket sent no valid start in time; closed"),
    ("media.bad_message", "warn", "a media socket sent a message its protocol forbids; closed"),
    ("media.refused", "warn", "a media stream's start names no call that may stream; closed"),
    ("media.backpressure", "warn", "the carrier stopped reading a media stream; closed"),
    ("media.mark_lost", "warn", "a playback mark never came back; counted as played"),
    ("media.restarts", "warn", "a call's media stream ended too often; the call is hung up"),
    # control: the AMP control socket (control/guard.py)
    ("control.too_large", "warn", "a control request over the size cap; answered TOO_LARGE"),
    ("control.bad_box", "warn", "a control client broke the protocol; dropped"),
    ("control.internal", "critical", "a control command failed unexpectedly (a bug)"),
    ("control.peer_refused", "warn", "a control client of another user or group; refused"),
    ("control.no_credentials", "warn", "a control client whose credentials cannot be read"),
    (
        "control.subscribed",
        "info",
        "a control client follows call events (voicecall tail, the shim)",
    ),
    ("control.subscriber_dropped", "warn", "a tail client stopped reading; dropped"),
    # guard: the toll-fraud and inbound policy (calls/admission.py)
    ("guard.outbound_refused", "warn", "an outbound call refused by the toll-fraud guard"),
    ("guard.inbound_refused", "warn", "an inbound call refused by the inbound policy"),
    # call: one call's life (calls/)
    ("call.placed", "info", "an outbound call was placed with the carrier"),
    ("call.answered_by", "info", "answering-machine detection decided who answered"),
    ("call.ended", "info", "a call ended, with its reason"),
    ("call.transfer_requested", "info", "a call was handed to a person; awaiting the carrier"),
    ("call.transfer_failed", "warn", "a transfer failed"),
    ("call.hangup_failed", "warn", "hanging up failed; retrying"),
    ("call.hangup_gave_up", "error", "hanging up failed every retry"),
    ("call.work_failed", "critical", "a call's background work failed (a bug)"),
    ("call.illegal_input", "warn", "the call state machine ignored an input"),
    # turn: speaking and listening (calls/turns.py, calls/manager.py)
    ("turn.illegal_input", "warn", "the turn state machine ignored an input"),
    ("turn.first_words_failed", "warn", "the first words of a call could not be played"),
    ("turn.reply_failed", "warn", "no reply could be made for the caller's words"),
    ("turn.barge_in", "debug", "the caller spoke over the bot"),
    ("turn.stale_speech", "debug", "words that answer an earlier turn; kept in the transcript"),
    (
        "turn.resumed",
        "info",
        "a call restored after a restart goes on (cut-off words, a lost reply, a repeat asked)",
    ),
    ("turn.resume_failed", "warn", "what a restored call was to say after a restart failed"),
    # store: the call store (calls/journal.py, calls/restore.py)
    ("store.restored", "info", "live calls restored at start"),
    ("store.restore_unchecked", "warn", "a restored call could not be checked with the carrier"),
    ("store.failed", "critical", "storing a call failed"),
    ("store.full", "error", "the call store's file system is full; new calls are refused"),
    ("store.space", "info", "the call store can write again after being full"),
    ("store.expired", "info", "ended calls older than retentionDays were deleted"),
    ("store.sweep_failed", "critical", "a retention sweep failed; it is tried again later"),
    # stt: speech-to-text (voice/stt_*.py)
    ("stt.unknown_provider", "warn", "the configured streaming STT provider is not built in"),
    ("stt.no_key", "warn", "streaming STT has no API key; calls are not transcribed"),
    ("stt.connect", "debug", "connecting to the STT server"),
    ("stt.open", "debug", "an STT session opened"),
    ("stt.closed", "debug", "an STT session closed"),
    ("stt.idle", "debug", "an idle STT socket closed; reopened with the next audio"),
    ("stt.recovered", "info", "the STT socket reconnected after a drop"),
    ("stt.retry", "warn", "the STT socket failed; retrying"),
    ("stt.bad_message", "warn", "the STT server sent something that is not JSON"),
    ("stt.metadata", "debug", "the STT vendor's request id"),
    ("stt.listener_fault", "critical", "a transcript listener failed (a bug)"),
    ("stt.fault", "critical", "the STT session failed unexpectedly"),
    # tts: text-to-speech (voice/tts_factory.py)
    ("tts.route", "info", "which TTS serves calls to a number"),
    # realtime: speech-to-speech sessions (realtime/, calls/tools.py)
    ("realtime.no_provider", "warn", "realtime is enabled but no provider is configured"),
    ("realtime.unknown_provider", "warn", "the configured realtime provider is unknown"),
    ("realtime.not_built", "warn", "the configured realtime provider is not built in"),
    ("realtime.no_provider_block", "warn", "the realtime provider has no config block"),
    ("realtime.open_failed", "critical", "opening a realtime session failed"),
    ("realtime.illegal_input", "warn", "the realtime session machine ignored an input"),
    ("realtime.barge_in", "debug", "the caller spoke over the model"),
    ("realtime.session_over", "warn", "a realtime session ended; the call is hung up"),
    ("realtime.mark_lost", "warn", "a playback mark never came back; counted as played"),
    ("realtime.tool_call", "info", "the model called a tool"),
    ("realtime.end_call_failed", "warn", "the model's hang-up failed"),
    ("realtime.result_after_end", "info", "a tool result arrived after the call ended"),
    ("realtime.result_dropped", "info", "a tool result had no realtime stream to go to"),
    ("realtime.host_consult", "info", "the model answered without consulting; the host consults"),
    ("realtime.host_consult_asked", "info", "the host's consult was put to the agent"),
    (
        "realtime.host_consult_dropped",
        "info",
        "the host's consult answer was not given to the model",
    ),
    # carrier: one carrier's own API (providers/*)
    ("twilio.no_streaming", "warn", "streaming is enabled but Twilio lacks what it needs"),
    ("telnyx.no_streaming", "warn", "streaming is enabled but Telnyx lacks what it needs"),
    ("plivo.no_streaming", "warn", "streaming is enabled but Plivo lacks what it needs"),
    ("twilio.update_failed", "warn", "updating a live Twilio call failed"),
    ("plivo.transfer_failed", "warn", "a Plivo transfer failed"),
    ("telnyx.stream_failed", "warn", "a Telnyx media stream failed"),
    ("telnyx.transfer_failed", "warn", "a Telnyx transfer failed; the caller is hung up"),
    ("telnyx.command_failed", "warn", "a Telnyx call command failed"),
    # expose: publishing the webhook (expose/)
    ("expose.url", "info", "the public webhook URL in use"),
    ("expose.unreachable", "warn", "the public URL cannot be reached by carriers"),
    ("expose.failed", "warn", "exposing the webhook failed; the local URL is used"),
    # daemon: the process's own life (daemon.py)
    ("daemon.draining", "info", "SIGTERM with shutdown.mode drain: no new calls, live ones finish"),
    ("daemon.drained", "info", "a drain is over; how many calls it ended as shutdown"),
    (
        "daemon.stopping",
        "info",
        "on the way out: calls drained, or how many are left with the carrier to restore",
    ),
    # log: the log itself (logs/flood.py)
    ("log.suppressed", "warn", "how many more of one code from one peer a window held back"),
)


def markdown() -> str:
    """The code table of docs/logs.md, one row per code, grouped as above."""
    lines = ["| code | level | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{c.code}` | {c.level} | {c.meaning} |" for c in CATALOG.values()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
