"""
Replies from an OpenAI-compatible chat endpoint, for conversations when no
responder (the gateway shim) is connected.

The call's transcript is the context; the reply is the text to say.  The
endpoint is C{responseBaseUrl} (default C{$OPENAI_BASE_URL}, else OpenAI's),
the model C{responseModel} (an C{openai/} prefix is dropped), the key
C{$OPENAI_API_KEY}.  An inbound call routed by C{numbers.<E.164>} uses its
route's model and system prompt.  A consult is one request: the system
prompt, the transcript, then the question.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import treq
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from voicecalld.config.model import VoiceCallSettings
from voicecalld.errors import ProviderError
from voicecalld.values.record import BOT, INBOUND, CallRecord
from voicecalld.values.route import route_of
from voicecalld.voice.replies import IResponder

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_PROMPT = (
    "You are a friendly, brief voice assistant on a phone call. Answer in one or two short"
    " spoken sentences: no lists, no markdown, no emoji. If you did not understand, ask the"
    " caller to repeat."
)
MAX_TOKENS = 200
CONSULT_MAX_TOKENS = 400
CONSULT_PROMPT = (
    "The voice assistant on this call asks you the question below. Answer it briefly and"
    " plainly, so the assistant can say it to the caller."
)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def spoken_text(content: str) -> str:
    """What to say from a model's answer: C{{"spoken": ...}} if it sent that, else the text."""
    text = content.strip()
    fenced = _FENCE.search(text)
    candidate = fenced.group(1).strip() if fenced else text
    if candidate.startswith("{"):
        try:
            data = json.loads(candidate)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("spoken"), str):
            return " ".join(data["spoken"].split())
    text = _FENCE.sub(lambda m: m.group(1), text)
    return " ".join(text.split())


def messages_for(record: CallRecord, system_prompt: str) -> list[dict[str, str]]:
    """The chat messages for a call: a system prompt with the call's context, then the turns."""
    if record.direction == INBOUND:
        context = f"The caller ({record.from_number}) called you."
    else:
        context = f"You called {record.to_number}."
    first = record.transcript[0].text if record.transcript else record.initial_message
    if first and record.direction != INBOUND:
        context += f" Your opening words were: {first!r}"
    messages = [{"role": "system", "content": f"{system_prompt}\n\n{context}"}]
    for entry in record.transcript:
        text = f"[pressed keys {entry.text}]" if entry.kind == "dtmf" else entry.text
        messages.append({"role": "assistant" if entry.speaker == BOT else "user", "content": text})
    return messages


@implementer(IResponder)
class ChatResponder:
    """Writes replies with a chat-completions endpoint."""

    log = Logger()

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        system_prompt: str,
        clock: IReactorTime,
        http: Any = treq,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": ["application/json"]}
        if api_key:
            self._headers["Authorization"] = [f"Bearer {api_key}"]
        self._model = model
        self._prompt = system_prompt
        self._clock = clock
        self._http = http

    def describe(self) -> str:
        """Where replies come from, for the log (no key)."""
        return f"{self._model} at {self._url}"

    def generate_reply(self, record: CallRecord) -> Deferred:
        model, prompt = self._for(record)
        body = {"model": model, "messages": messages_for(record, prompt), "max_tokens": MAX_TOKENS}
        return Deferred.fromCoroutine(self._ask(body))

    def consult(self, record: CallRecord, question: str) -> Deferred:
        model, prompt = self._for(record)
        messages = messages_for(record, prompt)
        messages.append({"role": "user", "content": f"{CONSULT_PROMPT}\n\n{question}"})
        body = {"model": model, "messages": messages, "max_tokens": CONSULT_MAX_TOKENS}
        return Deferred.fromCoroutine(self._ask(body))

    def _for(self, record: CallRecord) -> tuple[str, str]:
        """The model and system prompt of this call: its route's, else ours."""
        route = route_of(record)
        model = (route and route.response_model) or self._model
        return model.removeprefix("openai/"), (
            (route and route.response_system_prompt) or self._prompt
        )

    async def _ask(self, body: dict[str, Any]) -> str | None:
        try:
            response = await self._http.post(
                self._url, data=json.dumps(body).encode(), headers=self._headers
            )
            content = await response.content()
        except Exception as e:
            raise ProviderError(f"reply endpoint unreachable: {e or type(e).__name__}") from None
        if response.code != 200:
            raise ProviderError(
                f"reply endpoint answered HTTP {response.code}: {_message(content)}"
            )
        try:
            answer = json.loads(content)
            text = answer["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise ProviderError("reply endpoint sent an unreadable answer") from None
        return spoken_text(text) or None


def _message(content: bytes) -> str:
    try:
        error = json.loads(content).get("error", {})
        return str(error.get("message") or error)[:200]
    except (ValueError, AttributeError):
        return content[:200].decode("utf-8", "replace")


def make_chat_responder(
    settings: VoiceCallSettings, environ: Mapping[str, str], clock: IReactorTime, http: Any = treq
) -> ChatResponder | None:
    """The fallback responder, when an endpoint is configured (a key, or an explicit URL)."""
    key = environ.get("OPENAI_API_KEY")
    if not key and not settings.response_base_url:
        return None
    model = settings.response_model or DEFAULT_MODEL
    if model.startswith("openai/"):
        model = model.removeprefix("openai/")
    return ChatResponder(
        base_url=settings.response_base_url or DEFAULT_BASE_URL,
        api_key=key,
        model=model,
        system_prompt=settings.response_system_prompt or DEFAULT_PROMPT,
        clock=clock,
        http=http,
    )
