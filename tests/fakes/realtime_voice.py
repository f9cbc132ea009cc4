"""
An in-memory realtime speech-to-speech vendor the tests play.

L{ScriptedVoice} opens L{ScriptedSession}s and records what each is sent
(caller audio, speak and relay requests, truncations, tool results,
closes); the test speaks for the model through the session's listener with
the helpers (L{ScriptedSession.answer} plays a whole response: by default
the one for the oldest request not yet answered, echoing its token as a
vendor does; C{own=True} makes it the model's own).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from zope.interface import implementer

from voicecalld.realtime.interface import IRealtimeSession, IRealtimeVoice, RealtimeSetup


@implementer(IRealtimeSession)
class ScriptedSession:
    """One session: what it was sent, and the listener to speak for the model through."""

    def __init__(self, listener: Any, setup: RealtimeSetup) -> None:
        self.listener = listener
        self.setup = setup
        self.audio = bytearray()
        self.spoken: list[str] = []
        self.relayed: list[str] = []
        # Tokens of the speak/relay requests whose responses have not begun.
        self.unanswered: list[str] = []
        self._tokens = 0
        self.truncated: list[int] = []
        self.results: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    # -- IRealtimeSession ------------------------------------------------------

    def feed(self, ulaw: bytes) -> None:
        self.audio += ulaw

    def speak(self, text: str) -> str:
        self.spoken.append(text)
        return self._token()

    def relay(self, text: str) -> str:
        self.relayed.append(text)
        return self._token()

    def _token(self) -> str:
        self._tokens += 1
        token = f"t{self._tokens}"
        self.unanswered.append(token)
        return token

    def truncate(self, heard_ms: int) -> None:
        self.truncated.append(heard_ms)

    def tool_result(self, call_id: str, output: dict[str, Any]) -> None:
        self.results.append((call_id, output))

    def close(self) -> Any:
        if not self.closed:
            self.closed = True
            self.listener.closed("closed by us")
        return succeed(None)

    # -- the model, as the test plays it -----------------------------------------

    def answer(self, text: str, seconds: float, *, done: bool = True, own: bool = False) -> None:
        """A whole response: start, C{seconds} of audio, transcript and (C{done}) its end."""
        self.start(own=own)
        self.listener.audio(b"\x10" * int(8000 * seconds))
        if done:
            self.finish(text)

    def start(self, *, own: bool = False) -> None:
        """A response begins: the oldest unanswered request's (its token), or C{own}."""
        token = None if own or not self.unanswered else self.unanswered.pop(0)
        self.listener.response_started(token)

    def finish(self, text: str) -> None:
        """The response's transcript, then its end."""
        if text:
            self.listener.assistant_transcript(text)
        self.listener.response_done()

    def vendor_close(self, reason: str = "session expired") -> None:
        """The vendor ends the session."""
        self.closed = True
        self.listener.closed(reason)


@implementer(IRealtimeVoice)
class ScriptedVoice:
    """Opens L{ScriptedSession}s (C{ready} is the test's to send, unless C{auto_ready})."""

    name = "scripted"

    def __init__(self, auto_ready: bool = True) -> None:
        self.auto_ready = auto_ready
        self.sessions: list[ScriptedSession] = []

    def open_session(self, listener: Any, setup: RealtimeSetup) -> ScriptedSession:
        session = ScriptedSession(listener, setup)
        self.sessions.append(session)
        if self.auto_ready:
            listener.ready()
        return session
