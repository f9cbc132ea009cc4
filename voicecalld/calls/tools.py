"""
The realtime model's function calls, answered by the call core.

C{openclaw_end_call} hangs the call up through the lifecycle (reason
C{hangup-bot}; the media layer reports the call only once the model's last
words have played); if the hang-up fails, the model gets C{{"error": ...}}
and the call stays up.  C{openclaw_agent_consult} asks the responder
(L{ReplyRouter.consult}, the gateway's agent) and gives the model
C{{"answer": text}}; a cancelled consult gives C{{"status": "cancelled"}} and
the call stays up; with C{realtime.toolPolicy: none} it is refused.  A custom
C{realtime.tools} function is put to the responder the same way, as a
consult naming the function and its arguments, and its answer comes back as
C{{"result": text}}.  A consult the host asks itself (C{consultPolicy:
always}, when the model answered a caller's turn without consulting; its id
starts with L{HOST_CONSULT_PREFIX}) is the same consult, with the same
record, agent and context; its answer goes back the same way, and the
realtime bridge has the model say it.  When the call ends, its consults still running are
cancelled (their resources freed at once) and whatever arrives after the
end is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.live import LiveCall
from voicecalld.config.model import RealtimeSettings
from voicecalld.errors import Cancelled, provider_error
from voicecalld.providers.interface import IProvider
from voicecalld.values import events as ev
from voicecalld.values import notices
from voicecalld.values.tools import CONSULT_TOOL, END_CALL_TOOL, HOST_CONSULT_PREFIX


class RealtimeTools:
    """Answers one daemon's realtime tool calls; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        *,
        settings: RealtimeSettings,
        provider: IProvider,
        replies: Any,
        hang_up: Callable[[LiveCall], Awaitable[None]],
        hub: NoticeHub,
        clock: IReactorTime,
    ) -> None:
        self._settings = settings
        self._provider = provider
        self._replies = replies
        self._hang_up = hang_up
        self._hub = hub
        self._clock = clock
        self._custom = {tool.name for tool in settings.tools}
        self._running: dict[str, set[Deferred]] = {}
        hub.listen(self._notice)

    def _notice(self, notice: notices.Notice) -> None:
        if isinstance(notice, notices.CallEnded):
            for running in list(self._running.pop(notice.call_id, ())):
                running.cancel()

    def handle(self, live: LiveCall, call: ev.ToolCall) -> Deferred:
        """Answer C{call} in the background; fires when it has been answered (or dropped)."""
        if call.tool_call_id.startswith(HOST_CONSULT_PREFIX):
            self.log.info(
                "{call_id}: the host consults the agent on the caller's turn",
                call_id=live.call_id,
                log_code="realtime.host_consult_asked",
            )
        else:
            self.log.info(
                "{call_id}: the model called {name}",
                call_id=live.call_id,
                name=call.name,
                log_code="realtime.tool_call",
            )
        work = Deferred.fromCoroutine(self._answer(live, call))
        work.addErrback(
            lambda f: self.log.failure(
                "answering {name} on {call_id} failed", f, name=call.name, call_id=live.call_id
            )
        )
        return work

    async def _answer(self, live: LiveCall, call: ev.ToolCall) -> None:
        if call.name == END_CALL_TOOL:
            await self._end_call(live, call)
            return
        if call.name == CONSULT_TOOL:
            if self._settings.tool_policy == "none":
                output: dict[str, Any] = {"error": "consulting the agent is disabled"}
            else:
                output = await self._consult(live, _question(call.arguments), "answer")
        elif call.name in self._custom:
            question = (
                f"The voice model called the function {call.name} with the arguments"
                f" {json.dumps(call.arguments, sort_keys=True)}. Reply with its result."
            )
            output = await self._consult(live, question, "result")
        else:
            output = {"error": f"unknown function {call.name}"}
        self._result(live, call, output)

    async def _end_call(self, live: LiveCall, call: ev.ToolCall) -> None:
        try:
            await self._hang_up(live)
        except Exception as e:
            error = provider_error(e)
            self.log.warn(
                "the model's hang-up of {call_id} failed: {error}",
                call_id=live.call_id,
                error=error,
                log_code="realtime.end_call_failed",
            )
            self._hub.publish(
                notices.Problem(
                    at=self._clock.seconds(),
                    call_id=live.call_id,
                    what="hangup",
                    message=str(error),
                )
            )
            self._result(live, call, {"error": f"the call could not be ended: {error}"})

    async def _consult(self, live: LiveCall, question: str, key: str) -> dict[str, Any]:
        if not question:
            return {"error": "no question"}
        asking = maybeDeferred(self._replies.consult, live.record, question)
        running = self._running.setdefault(live.call_id, set())
        running.add(asking)
        try:
            answer = await asking
        except (CancelledError, Cancelled):
            return {"status": "cancelled"}
        except Exception as e:
            return {"error": str(e) or type(e).__name__}
        finally:
            running.discard(asking)
            if not running and self._running.get(live.call_id) is running:
                del self._running[live.call_id]
        if not answer:
            return {"error": "the agent had no answer"}
        return {key: answer}

    def _result(self, live: LiveCall, call: ev.ToolCall, output: dict[str, Any]) -> None:
        if live.record.ended:
            self.log.info(
                "result of {name} on {call_id} dropped: the call has ended",
                name=call.name,
                call_id=live.call_id,
                log_code="realtime.result_after_end",
            )
            return
        self._provider.tool_result(live.record, call.tool_call_id, output)


def _question(arguments: dict[str, Any]) -> str:
    """What a consult asks: its question (or query), with the context the model gave."""
    question = arguments.get("question") or arguments.get("query") or ""
    context = arguments.get("context")
    text = str(question).strip()
    if context and str(context).strip():
        text = f"{text}\n\nContext from the call: {str(context).strip()}"
    return text
