"""
The carriers' JSON frame reader takes a shortcut to the JSON scanner; for
any frame at all it must give what C{json.loads} gives: the same message
and event, or the same refusal.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from voicecalld.media.stream import BadMessage
from voicecalld.providers.common.frames import read_json


def reference(payload: Any, is_binary: bool) -> tuple[Any, Any]:
    """What read_json answered before the shortcut: json.loads and the event."""
    try:
        message = json.loads(payload)
        return message, message["event"]
    except (ValueError, TypeError, KeyError, RecursionError):
        raise BadMessage("malformed message") from None


def outcome(read: Any, payload: Any) -> Any:
    try:
        message, event = read(payload, False)
    except BadMessage as e:
        return ("refused", e.reason, e.code)
    return ("read", json.dumps(message, sort_keys=True), repr(event))


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["media", "start", "mark", "\u00e9", "\ud83d\ude00", "a\\b", 'q"']),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
messages = st.one_of(
    values,
    st.fixed_dictionaries(
        {"event": st.sampled_from(["media", "stop", "mark"])}, optional={"media": values}
    ),
)
spaces = st.sampled_from(["", " ", "\n", "\t", "\r\n ", "\f", "\v", "\x00"])
encodings = st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"])


@st.composite
def frames(draw: Any) -> bytes:
    message = draw(messages)
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " :")]))
    text = json.dumps(message, separators=separators, ensure_ascii=draw(st.booleans()))
    text = draw(spaces) + text + draw(spaces)
    data = bytearray(text.encode(draw(encodings), "surrogatepass"))
    for _ in range(draw(st.integers(0, 2))):
        if data:
            where = draw(st.integers(0, len(data) - 1))
            data[where] = draw(st.integers(0, 255))
    return bytes(data)


class SameAsJsonLoadsTests(SynchronousTestCase):
    """read_json against json.loads."""

    def same(self, payload: Any) -> None:
        self.assertEqual(outcome(read_json, payload), outcome(reference, payload))

    @settings(max_examples=400, deadline=None)
    @given(frames())
    @example(b'{"event":"media","event":"stop"}')
    @example(b'{"event":"media","media":{"payload":"AAAA"},"media":{"payload":"/w=="}}')
    @example(b'{"event":"media"} ')
    @example(b' {"event":"media"}')
    @example(b'{"event":"media"}{"event":"stop"}')
    @example(b'\xef\xbb\xbf{"event":"media"}')
    @example(b'{"event":"\xed\xa0\x80"}')
    @example(b'{"event":"\\ud800"}')
    @example(b'{"event":"media","n":NaN,"i":-Infinity}')
    @example(b'{"event":"med\\u0069a"}')
    @example(b'{"event":"a\tb"}')
    @example(b"null")
    @example(b'["event"]')
    @example(b'"event"')
    @example(b"")
    @example(b"[" * 100_000 + b"]" * 100_000)
    @example('{"event":"media"}')
    def test_any_frame(self, payload: bytes) -> None:
        self.same(payload)

    def test_media_message(self) -> None:
        payload = b'{"event":"media","media":{"payload":"/38A"},"streamSid":"MZ1"}'
        message, event = read_json(payload, False)
        self.assertEqual(event, "media")
        self.assertEqual(message["media"]["payload"], "/38A")

    def test_non_finite_numbers_as_json_loads_reads_them(self) -> None:
        message, _ = read_json(b'{"event":"x","n":NaN}', False)
        self.assertTrue(math.isnan(message["n"]))

    def test_binary_frames_are_refused(self) -> None:
        with self.assertRaises(BadMessage) as caught:
            read_json(b'{"event":"media"}', True)
        self.assertEqual(caught.exception.code, 1003)
