"""The shared vendor-socket pieces on their own: the audio batcher and the socket set."""

from __future__ import annotations

from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from voicecalld.voice.audio_batch import AudioBatcher
from voicecalld.voice.vendor_socket import SocketSet, VendorClientProtocol, with_query


class BatcherTests(TestCase):
    """When caller audio goes out, and what is kept while it cannot."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.sent: list[bytes] = []
        self.can_send = True

    def batcher(self, chunked: bool = False) -> AudioBatcher:
        return AudioBatcher(
            self.clock,
            self.sent.append,
            lambda: self.can_send,
            batch_seconds=0.1,
            max_buffer_bytes=1000,
            chunked=chunked,
        )

    def test_a_full_batch_goes_at_once_a_partial_one_after_the_batch_time(self):
        audio = self.batcher()
        audio.add(b"\x01" * 160, sending=True)
        self.assertEqual(self.sent, [])
        audio.add(b"\x02" * 640, sending=True)
        self.assertEqual(self.sent, [b"\x01" * 160 + b"\x02" * 640])
        audio.add(b"\x03" * 160, sending=True)
        self.clock.advance(0.1)
        self.assertEqual(self.sent[1:], [b"\x03" * 160])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_held_audio_is_bounded_and_the_drop_counted(self):
        audio = self.batcher()
        audio.add(b"\x01" * 800, sending=False)
        audio.add(b"\x02" * 800, sending=False)
        self.assertEqual((len(audio.pending), audio.dropped), (1000, 600))
        audio.release()
        self.assertEqual(self.sent, [b"\x01" * 200 + b"\x02" * 800])

    def test_nothing_goes_while_the_socket_cannot_take_it(self):
        audio = self.batcher()
        self.can_send = False
        audio.add(b"\x01" * 800, sending=True)
        self.assertEqual((self.sent, len(audio.pending)), ([], 800))

    def test_chunked_release_sends_even_batches_then_the_rest_a_batch_later(self):
        audio = self.batcher(chunked=True)
        audio.add(b"\x01" * 1800, sending=False)
        audio.release()
        self.assertEqual([len(b) for b in self.sent], [800])
        self.clock.advance(0.1)
        self.assertEqual([len(b) for b in self.sent], [800, 200])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clear_forgets_audio_and_the_timer(self):
        audio = self.batcher()
        audio.add(b"\x01" * 160, sending=True)
        audio.clear()
        self.clock.advance(1)
        self.assertEqual((self.sent, bytes(audio.pending)), ([], b""))


class _Proto:
    def __init__(self, state: int) -> None:
        self.state = state
        self.did: list[Any] = []

    def sendClose(self, code: int) -> None:
        self.did.append(("close", code))

    def dropConnection(self, abort: bool) -> None:
        self.did.append(("drop", abort))


class SocketSetTests(TestCase):
    """Closing every socket, and hearing when the last one went."""

    def test_gone_fires_once_the_last_socket_goes(self):
        sockets = SocketSet()
        self.successResultOf(sockets.gone())
        a, b = _Proto(WebSocketProtocol.STATE_OPEN), _Proto(WebSocketProtocol.STATE_CONNECTING)
        sockets.add(a)
        sockets.add(b)
        sockets.close_all()
        self.assertEqual((a.did, b.did), ([("close", 1000)], [("drop", True)]))
        gone = sockets.gone()
        sockets.discard(a)
        self.assertNoResult(gone)
        sockets.discard(b)
        self.successResultOf(gone)
        self.assertFalse(sockets)

    def test_a_closed_socket_is_left_alone(self):
        sockets = SocketSet()
        done = _Proto(WebSocketProtocol.STATE_CLOSED)
        sockets.add(done)
        sockets.close_all()
        self.assertEqual(done.did, [])


def test_with_query():
    assert with_query("wss://x/v1", []) == "wss://x/v1"
    assert with_query("wss://x/v1", [("a", "1 2")]) == "wss://x/v1?a=1+2"
    assert with_query("wss://x/v1?k=v", [("a", "b")]) == "wss://x/v1?k=v&a=b"


class CloseReasonTests(TestCase):
    """What a vendor's socket reports when it goes away."""

    def closed(self, remote_code: int | None, was_clean: bool, code: int, reason: str) -> str:
        lost: list[str] = []
        owner = type("Owner", (), {"_lost": lambda self, proto, detail: lost.append(detail)})()
        proto = VendorClientProtocol()
        proto.factory = type("Factory", (), {"owner": owner})()
        proto.remoteCloseCode = remote_code
        proto.remoteCloseReason = "Internal error encountered." if remote_code else None
        proto.onClose(was_clean, code, reason)
        return lost[0]

    def test_the_servers_close_frame_is_the_reason_even_if_the_handshake_did_not_finish(self):
        # On a busy machine the server may drop TCP before our close reply: autobahn
        # then says 1006, but the server did say why it closed.
        detail = self.closed(1011, False, 1006, "connection was closed uncleanly")
        self.assertEqual(detail, "closed by the server (code 1011: Internal error encountered.)")

    def test_a_drop_without_a_close_frame_says_so(self):
        detail = self.closed(None, False, 1006, "peer dropped the TCP connection")
        self.assertEqual(detail, "peer dropped the TCP connection")
