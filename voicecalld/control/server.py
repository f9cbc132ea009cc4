"""
The control server: AMP on the UNIX control socket.

Only the daemon's own user (or root), or members of the socket file's group
when the socket is group-writable, may talk to it; everyone else is logged
and disconnected.  A subscriber that stops reading is given a bounded queue
and then dropped, so no client can stall the daemon.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
import struct
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from voicecalld import __version__
from voicecalld.calls.manager import CallManager
from voicecalld.calls.routes import consult_context, responder_context
from voicecalld.control import commands as c
from voicecalld.control.guard import GuardedAMP
from voicecalld.errors import CallEnded, ExposeFailed, InvalidArgument, NotAllowed
from voicecalld.expose.process import ExposeError
from voicecalld.providers.interface import IProvider, ISimulator
from voicecalld.values.notices import Notice, Subscribed
from voicecalld.values.record import CallRecord
from voicecalld.voice.replies import IResponder

SUBSCRIBER_QUEUE = 1000


def peer_credentials(transport: Any) -> tuple[int, int, int] | None:
    """The (pid, uid, gid) of the process at the other end of a UNIX socket."""
    try:
        handle = transport.getHandle()
        raw = handle.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    return struct.unpack("3i", raw)


class PeerPolicy:
    """Decides which local users may use the control socket."""

    def __init__(self, socket_path: str | None, uid: int | None = None) -> None:
        self._socket_path = socket_path
        self._uid = os.geteuid() if uid is None else uid

    def check(self, uid: int, gid: int) -> Deferred[bool]:
        """Fire with whether user C{uid} (primary group C{gid}) may connect."""
        if uid in (self._uid, 0):
            return succeed(True)
        group = self._socket_group()
        if group is None:
            return succeed(False)
        if gid == group:
            return succeed(True)
        return deferToThread(_in_group, uid, gid, group)

    def _socket_group(self) -> int | None:
        """The socket file's group, when the socket's mode lets that group connect."""
        if self._socket_path is None:
            return None
        try:
            info = os.stat(self._socket_path)
        except OSError:
            return None
        return info.st_gid if info.st_mode & stat.S_IWGRP else None


def _in_group(uid: int, gid: int, group: int) -> bool:
    try:
        name = pwd.getpwuid(uid).pw_name
        return group in os.getgrouplist(name, gid)
    except (KeyError, OSError):
        return False


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@implementer(IPushProducer)
class Subscription:
    """Delivers notices to one client as L{c.Event}s, queueing while it is slow."""

    log = Logger()

    def __init__(self, protocol: ControlProtocol, call_id: str | None) -> None:
        self._protocol = protocol
        self.call_id = call_id
        self._queue: deque[Notice] = deque()
        self._paused = False
        self._stop_listening = protocol.manager.hub.listen(self.deliver)
        protocol.transport.registerProducer(self, True)

    def deliver(self, notice: Notice) -> None:
        """Send C{notice} now, or queue it while the client is not reading."""
        if self.call_id is not None and notice.call_id not in (self.call_id, None):
            return
        if self._paused or self._queue:
            if len(self._queue) >= SUBSCRIBER_QUEUE:
                self.log.warn(
                    "subscriber {peer} dropped: it stopped reading and {count} events are waiting",
                    peer=self._protocol.peer,
                    count=len(self._queue),
                    log_code="control.subscriber_dropped",
                )
                self.stop()
                self._protocol.transport.abortConnection()
                return
            self._queue.append(notice)
            return
        self._send(notice)

    def _send(self, notice: Notice) -> None:
        self._protocol.callRemote(c.Event, event=notice.to_json())

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._queue and not self._paused:
            self._send(self._queue.popleft())

    def stopProducing(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop delivering notices."""
        self._stop_listening()
        self._queue.clear()


@implementer(IResponder)
class RemoteResponder:
    """An L{IResponder} on the other end of a control connection."""

    def __init__(self, protocol: ControlProtocol) -> None:
        self._protocol = protocol

    def describe(self) -> str:
        return f"the responder connected from {self._protocol.peer}"

    def generate_reply(self, record: CallRecord) -> Deferred:
        d = self._protocol.callRemote(
            c.GenerateReply,
            callId=record.call_id,
            call=record.to_json(),
            context=responder_context(self._protocol.manager.settings, record),
        )
        return d.addCallback(lambda answer: answer.get("text"))

    def consult(self, record: CallRecord, question: str) -> Deferred:
        d = self._protocol.callRemote(
            c.Consult,
            callId=record.call_id,
            call=record.to_json(),
            question=question,
            context=consult_context(self._protocol.manager.settings, record),
        )
        return d.addCallback(lambda answer: answer.get("text"))


class ControlProtocol(GuardedAMP):
    """One control connection: the CLI, the gateway shim or a test."""

    log = Logger()

    def __init__(self, factory: ControlFactory) -> None:
        super().__init__()
        self.factory = factory
        self.tally = factory.tally
        self.manager: CallManager = factory.manager
        self.peer = "unknown peer"
        self._subscription: Subscription | None = None
        self._unregister = None

    def connectionMade(self) -> None:
        super().connectionMade()
        creds = self.factory.credentials(self.transport)
        if creds is None:
            self.log.warn(
                "control connection refused: cannot tell who is connecting",
                peer="unknown",
                log_code="control.no_credentials",
            )
            self.transport.abortConnection()
            return
        pid, uid, gid = creds
        self.peer = f"pid {pid} uid {uid}"
        self.transport.pauseProducing()
        self.factory.policy.check(uid, gid).addCallback(self._checked, uid, gid)

    def _checked(self, allowed: bool, uid: int, gid: int) -> None:
        if not allowed:
            self.log.warn(
                "control connection from {who} (group {group}) refused: only the"
                " daemon's user or the socket's group may connect",
                who=self.peer,
                peer=f"uid {uid}",
                group=_group_name(gid),
                log_code="control.peer_refused",
            )
            self.transport.abortConnection()
            return
        self.factory.clients.add(self)
        self.transport.resumeProducing()

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if self._subscription is not None:
            self._subscription.stop()
        if self._unregister is not None:
            self._unregister()
        self.factory.clients.discard(self)

    @c.Ping.responder
    def ping(self) -> dict[str, str]:
        return {"version": __version__, "provider": self.factory.provider.name}

    @c.Initiate.responder
    def initiate(
        self, to=None, message=None, mode=None, sessionKey=None, dtmfSequence=None
    ) -> Deferred:
        async def run():
            record = await self.manager.initiate(to, message, mode, sessionKey, dtmfSequence)
            return {"callId": record.call_id, "call": record.to_json()}

        return Deferred.fromCoroutine(run())

    @c.Continue.responder
    def continue_(self, callId, message) -> Deferred:
        async def run():
            words = await self.manager.continue_call(callId, message)
            return {"callId": callId, "transcript": words}

        return Deferred.fromCoroutine(run())

    @c.Speak.responder
    def speak(self, callId, message) -> Deferred:
        async def run():
            playback = await self.manager.speak(callId, message)
            return {"played": playback.played, "complete": playback.complete}

        return Deferred.fromCoroutine(run())

    @c.SendDtmf.responder
    def send_dtmf(self, callId, digits) -> Deferred:
        async def run():
            await self.manager.send_dtmf(callId, digits)
            return {}

        return Deferred.fromCoroutine(run())

    @c.Transfer.responder
    def transfer(self, callId, to, message=None) -> Deferred:
        async def run():
            record = await self.manager.transfer(callId, to, message)
            return {"call": record.to_json()}

        return Deferred.fromCoroutine(run())

    @c.End.responder
    def end(self, callId) -> Deferred:
        async def run():
            record = await self.manager.end(callId)
            return {"call": record.to_json()}

        return Deferred.fromCoroutine(run())

    @c.Status.responder
    def status(self, callId=None, recent=None) -> Deferred:
        async def run():
            if callId:
                record = await self.manager.get(callId)
                return {"call": record.to_json()}
            if recent:
                if recent < 1:
                    raise InvalidArgument("recent must be a positive number")
                records = await self.manager.recent(min(recent, 1000))
            else:
                records = self.manager.live_calls()
            return {"calls": [r.to_json() for r in records]}

        return Deferred.fromCoroutine(run())

    @c.Subscribe.responder
    def subscribe(self, callId=None) -> dict[str, Any]:
        if self._subscription is not None:
            self._subscription.call_id = callId
        else:
            self._subscription = Subscription(self, callId)
            self.log.info(
                "{peer} follows the events of {which}",
                peer=self.peer,
                which=f"call {callId}" if callId else "every call",
                log_code="control.subscribed",
            )
        live = len(self.manager.live_calls())
        now = self.factory.clock.seconds()
        self._subscription.deliver(Subscribed(at=now, call_id=callId, live_calls=live))
        return {}

    @c.Simulate.responder
    def simulate(self, action, callId=None, From=None, to=None, text=None, digits=None) -> Deferred:
        async def run():
            if action == "consult":
                return await self._simulate_consult(callId, text)
            call_id = await self.manager.simulate(action, callId, From, to, text, digits)
            return {"callId": call_id}

        return Deferred.fromCoroutine(run())

    async def _simulate_consult(self, call_id: str | None, question: str | None) -> dict:
        """The model's C{openclaw_agent_consult} on a live mock call, answered by the responder."""
        if not ISimulator.providedBy(self.factory.provider):
            raise NotAllowed(
                "simulate works only with the mock provider"
                f" (this daemon runs {self.factory.provider.name})"
            )
        if not question:
            raise InvalidArgument("text required")
        if not call_id:
            raise InvalidArgument("callId required")
        live = {r.call_id: r for r in self.manager.live_calls()}
        record = live.get(call_id)
        if record is None:
            ended = await self.manager.get(call_id)
            raise CallEnded(f"Call has ended ({ended.end_reason})")
        answer = await self.manager.replies.consult(record, question)
        return {"callId": call_id, "text": answer or None}

    @c.Expose.responder
    def expose(self, mode) -> Deferred:
        async def run():
            if mode not in ("funnel", "serve", "off"):
                raise InvalidArgument("mode must be funnel, serve or off")
            if self.factory.exposer is None:
                raise NotAllowed("this daemon cannot change its exposure")
            try:
                exposure = await self.factory.exposer.change(mode)
            except ExposeError as e:
                raise ExposeFailed(str(e)) from None
            return {
                "how": exposure.how,
                "publicUrl": exposure.public_url,
                "streamUrl": exposure.stream_url,
            }

        return Deferred.fromCoroutine(run())

    @c.RegisterResponder.responder
    def register_responder(self, name=None) -> dict[str, Any]:
        if self._unregister is None:
            self._unregister = self.manager.replies.register(RemoteResponder(self))
            self.log.info(
                "responder {name} registered from {peer}", name=name or "unnamed", peer=self.peer
            )
        return {}


class ControlFactory(Factory):
    """Builds a L{ControlProtocol} per connection."""

    def __init__(
        self,
        manager: CallManager,
        provider: IProvider,
        policy: PeerPolicy,
        credentials: Callable[[Any], tuple[int, int, int] | None] = peer_credentials,
        exposer: Any = None,
        clock: Any = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.manager = manager
        self.provider = provider
        self.policy = policy
        self.credentials = credentials
        self.exposer = exposer
        self.clients: set[ControlProtocol] = set()
        # Answered requests by (command, code), counted by each connection.
        self.tally: Counter[tuple[str, str]] = Counter()

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        return ControlProtocol(self)
