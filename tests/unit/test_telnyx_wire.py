"""
Telnyx's wire format on its own: the Ed25519 verifier and the forms of key
and signature it takes, the media-stream codec, reordering of numbered
caller audio, REST error bodies, hang-up causes, and the provider registry.
"""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet.task import Clock

from tests.fakes.telnyx import WebhookSigner
from voicecalld.config import parse_config
from voicecalld.config.schema import Problem
from voicecalld.media.reorder import Reorder
from voicecalld.media.stream import BadMessage, StreamMark, StreamMedia, StreamStart, StreamStop
from voicecalld.providers.common.verify import SignedRequest
from voicecalld.providers.registry import make_provider
from voicecalld.providers.telnyx.codec import TelnyxCodec
from voicecalld.providers.telnyx.dialect import end_reason
from voicecalld.providers.telnyx.provider import TelnyxProvider, native_voice
from voicecalld.providers.telnyx.rest import (
    call_id_from_state,
    client_state,
    dial_params,
    telnyx_error,
)
from voicecalld.providers.telnyx.signature import (
    BadPublicKey,
    TelnyxVerifier,
    load_public_key,
)
from voicecalld.values.states import CallState

NOW = 1_800_000_000
BODY = b'{"data":{"event_type":"call.answered","id":"e1","payload":{}}}'
URL = "https://voice.example.com/voice/webhook"


def request(
    signer: WebhookSigner,
    *,
    stamp: int = NOW,
    now: float = NOW,
    body: bytes = BODY,
    signature: str | None = None,
) -> SignedRequest:
    sig = signature if signature is not None else signer.sign(str(stamp), BODY)
    return SignedRequest(
        urls=(URL,),
        headers={
            b"telnyx-signature-ed25519": sig.encode(),
            b"telnyx-timestamp": str(stamp).encode(),
        },
        body=body,
        now=now,
    )


# -- signature ---------------------------------------------------------------------


@pytest.mark.parametrize("form", ["public_key_base64", "public_key_pem", "public_key_der_base64"])
def test_every_key_form_verifies(form):
    signer = WebhookSigner()
    verifier = TelnyxVerifier(load_public_key(getattr(signer, form)))
    assert verifier.verify(request(signer)).accepted


def test_base64url_signatures_without_padding_are_accepted():
    signer = WebhookSigner()
    verifier = TelnyxVerifier(load_public_key(signer.public_key_base64))
    standard = signer.sign(str(NOW), BODY)
    url_form = base64.urlsafe_b64encode(base64.b64decode(standard)).decode().rstrip("=")
    assert verifier.verify(request(signer, signature=url_form)).accepted


def test_the_timestamp_window_is_300_seconds_either_way():
    signer = WebhookSigner()
    verifier = TelnyxVerifier(load_public_key(signer.public_key_base64))
    assert verifier.verify(request(signer, now=NOW + 300)).accepted
    assert verifier.verify(request(signer, now=NOW - 300)).accepted
    stale = verifier.verify(request(signer, now=NOW + 301))
    assert not stale.accepted and "timestamp" in stale.why
    assert not verifier.verify(request(signer, now=NOW - 301)).accepted


def test_tampering_other_keys_and_missing_headers_are_refused():
    signer = WebhookSigner()
    verifier = TelnyxVerifier(load_public_key(signer.public_key_base64))
    assert verifier.verify(request(signer, body=BODY + b" ")).why == "invalid signature"
    other = WebhookSigner()
    assert not verifier.verify(request(other)).accepted
    assert not verifier.verify(SignedRequest(urls=(URL,), body=BODY, now=NOW)).accepted
    assert not verifier.verify(request(signer, signature="not base64!")).accepted
    assert not TelnyxVerifier(None).verify(request(signer)).accepted


SHORT_KEY = base64.b64encode(b"x" * 31).decode()


@pytest.mark.parametrize("text", ["", "hello", SHORT_KEY, "-----BEGIN x"])
def test_unreadable_keys_are_refused(text):
    with pytest.raises(BadPublicKey):
        load_public_key(text)


def test_a_non_ed25519_key_is_refused():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(BadPublicKey, match="Ed25519"):
        load_public_key(pem)


# -- the registry --------------------------------------------------------------------


def telnyx_config(public_key: str) -> dict:
    return {
        "provider": "telnyx",
        "fromNumber": "+15550001111",
        "publicUrl": URL,
        "telnyx": {"apiKey": "KEY", "connectionId": "123", "publicKey": public_key},
    }


def test_the_registry_builds_telnyx():
    key = base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes_raw()).decode()
    provider = make_provider(parse_config(telnyx_config(key), None, {}), Clock())
    assert isinstance(provider, TelnyxProvider)
    assert provider.name == "telnyx"


def test_an_unreadable_public_key_is_a_problem_naming_it():
    loaded = parse_config(telnyx_config("not-a-key"), None, {})
    with pytest.raises(Problem) as caught:
        make_provider(loaded, Clock())
    assert caught.value.path[-2:] == ("telnyx", "publicKey")
    assert "Ed25519" in str(caught.value)


def test_environment_fallbacks_fill_the_telnyx_keys():
    loaded = parse_config(
        {"provider": "telnyx", "fromNumber": "+15550001111"},
        None,
        {"TELNYX_API_KEY": "K", "TELNYX_CONNECTION_ID": "9", "TELNYX_PUBLIC_KEY": "P"},
    )
    telnyx = loaded.settings.telnyx
    assert (telnyx.api_key.reveal(), telnyx.connection_id, telnyx.public_key.reveal()) == (
        "K",
        "9",
        "P",
    )


# -- codec -----------------------------------------------------------------------------

START = {
    "event": "start",
    "sequence_number": "1",
    "stream_id": "S1",
    "start": {
        "call_control_id": "v3:abc",
        "custom_parameters": {"token": "t", "callId": "c"},
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    },
}


def frame(message: dict) -> bytes:
    return json.dumps(message).encode()


def test_the_start_names_the_stream_at_the_top_level():
    codec = TelnyxCodec()
    assert codec.parse_start(frame({"event": "connected", "version": "1.0.0"}), False) is None
    assert codec.parse_start(frame(START), False) == StreamStart(
        "S1", "v3:abc", {"token": "t", "callId": "c"}
    )
    with pytest.raises(BadMessage):
        codec.parse_start(frame({"event": "start", "start": {}}), False)
    with pytest.raises(BadMessage):
        codec.parse_start(b"\x00", True)


def test_media_marks_and_stop():
    codec = TelnyxCodec()
    media = {
        "event": "media",
        "sequence_number": "4",
        "stream_id": "S1",
        "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "//8="},
    }
    assert codec.parse(frame(media), False) == StreamMedia(b"\xff\xff", 2)
    outbound = {**media, "media": {**media["media"], "track": "outbound"}}
    assert codec.parse(frame(outbound), False) is None
    assert codec.parse(frame({"event": "mark", "mark": {"name": "u1:end"}}), False) == StreamMark(
        "u1:end"
    )
    assert codec.parse(frame({"event": "dtmf", "dtmf": {"digit": "1"}}), False) is None
    assert codec.parse(frame({"event": "stop", "stream_id": "S1"}), False) == StreamStop()
    bad = {**media, "media": {"payload": "not base64!"}}
    with pytest.raises(BadMessage):
        codec.parse(frame(bad), False)


def test_outbound_messages():
    encoder = TelnyxCodec().encoder(StreamStart("S1", "v3:abc"))
    assert json.loads(encoder.media(b"\xff\xff")) == {
        "event": "media",
        "media": {"payload": "//8="},
    }
    assert json.loads(encoder.mark("u1:end")) == {"event": "mark", "mark": {"name": "u1:end"}}
    assert json.loads(encoder.clear()) == {"event": "clear"}
    assert encoder.binary is False


# -- reordering ------------------------------------------------------------------------


def reorder(numbers: list[int], depth: int = 3) -> tuple[list[int], Reorder]:
    out: list[int] = []
    r = Reorder(lambda audio: out.append(audio[0]), depth)
    for n in numbers:
        r.frame(n, bytes([n]))
    return out, r


def test_in_order_frames_pass_after_the_first_few():
    out, _ = reorder(list(range(1, 11)))
    assert out == list(range(1, 11))


def test_swapped_frames_come_out_in_order():
    out, r = reorder([2, 1, 4, 3, 6, 5, 8, 7])
    r.flush()
    assert out == list(range(1, 9))


def test_a_lost_frame_is_given_up_and_late_or_repeated_ones_dropped():
    out, r = reorder([1, 2, 3, 4, 6, 7, 8, 9, 5, 9, 10])
    assert out == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    r.flush()
    assert out[-1] == 10


# -- REST and events -----------------------------------------------------------------------


def test_telnyx_error_bodies():
    body = json.dumps({"errors": [{"code": "90018", "title": "Call has already ended"}]})
    assert telnyx_error(422, body.encode()) == ("90018", "Call has already ended")
    assert telnyx_error(500, b"<html>") == (None, None)
    assert telnyx_error(400, b'{"errors": []}') == (None, None)


def test_client_state_carries_our_call_id():
    assert call_id_from_state(client_state("call-1")) == "call-1"
    assert call_id_from_state("not base64!") is None
    assert call_id_from_state(None) is None


def test_dial_parameters_are_clamped():
    params = dial_params(
        connection_id="1",
        to="+1",
        from_="+2",
        webhook_url=URL,
        call_id="c",
        ring_seconds=1,
        time_limit=99_999,
    )
    assert (params["timeout_secs"], params["time_limit_secs"]) == (5, 14400)


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        ("normal_clearing", CallState.COMPLETED),
        ("originator_cancel", CallState.HANGUP_BOT),
        ("user_busy", CallState.BUSY),
        ("call_rejected", CallState.BUSY),
        ("no_answer", CallState.NO_ANSWER),
        ("timeout", CallState.NO_ANSWER),
        ("time_limit", CallState.TIMEOUT),
        ("service_unavailable", CallState.FAILED),
        ("machine_detected", CallState.VOICEMAIL),
        ("user_hangup", CallState.HANGUP_USER),
        ("something_new", CallState.COMPLETED),
        (None, CallState.COMPLETED),
    ],
)
def test_hangup_causes(cause, reason):
    assert end_reason(cause) is reason


def test_native_voices():
    assert native_voice(None) == "female"
    assert native_voice("nova") == "AWS.Polly.Salli-Neural"
    assert native_voice("Polly.Amy") == "AWS.Polly.Amy"
    assert native_voice("Telnyx.KokoroTTS.af") == "Telnyx.KokoroTTS.af"
    assert native_voice("unknown") == "female"
