"""``PushService`` (service name ``"push"``): the senders, the queue and the worker of one
msg node, built from the ``[push]`` config. Present only where the msg service runs and
at least one sender is configured; the msg service then writes an outbox row with each
message through the node's ``PushOutbox`` (``store_single_messages`` /
``store_group_message``) and kicks the worker after each commit.

The outbox is its own small object because msg and push need each other: msg stores
through the outbox, push asks msg's route client who is online. ``tap.py`` builds the
outbox first, hands it to both, and push gets msg's ``Presence`` in its constructor.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger

from teamtalk_py.config import Config, PushConfig
from teamtalk_py.metrics import one
from teamtalk_py.push import store as push_store
from teamtalk_py.push.decision import Rules
from teamtalk_py.push.jobs import ANDROID, IOS, PushJob
from teamtalk_py.push.queue import PushQueue, StoreQueue, StreamQueue
from teamtalk_py.push.senders.aio import AsyncioThread
from teamtalk_py.push.senders.base import Outcome, Result, Sender
from teamtalk_py.push.worker import Limits, PushCounters, PushWorker
from teamtalk_py.services import TeamTalkService
from teamtalk_py.shared_state import SharedState
from teamtalk_py.store.groups import StoredGroupMessage, group_row_first
from teamtalk_py.store.messages import Accepted, NewMessage, pair_rows_first
from teamtalk_py.store.resends import SendKey
from teamtalk_py.store.service import StoreService
from teamtalk_py.store.txn import Txn, lock_order

log = Logger(namespace="teamtalk.push")


def build_senders(reactor: Any, push: PushConfig) -> dict[str, Sender]:
    """The configured senders by name (they share one asyncio thread for HTTP/2)."""
    senders: dict[str, Sender] = {}
    thread = AsyncioThread(reactor)
    if push.apns_key_file:
        from teamtalk_py.push.senders.apns import ApnsSender, ApnsSettings

        settings = ApnsSettings(
            key_pem=Path(push.apns_key_file).read_bytes(),
            key_id=push.apns_key_id,
            team_id=push.apns_team_id,
            topic=push.apns_topic,
            host=push.apns_host,
            max_age=push.max_age,
            ca_file=push.ca_file,
        )
        senders["apns"] = ApnsSender(reactor, settings, thread)
    if push.fcm_service_account:
        from teamtalk_py.push.senders.fcm import FcmSender, FcmSettings

        account = json.loads(Path(push.fcm_service_account).read_text())
        senders["fcm"] = FcmSender(
            reactor,
            FcmSettings(account, push.fcm_endpoint.rstrip("/"), push.max_age, push.ca_file),
            thread,
        )
    if push.push_server:
        from teamtalk_py.push.senders.push_server import PushServerSender

        senders["push_server"] = PushServerSender(reactor, push.push_server)
    return senders


def sender_names(push: PushConfig) -> set[str]:
    """The senders ``build_senders`` makes for this config."""
    names = {"apns"} if push.apns_key_file else set()
    names |= {"fcm"} if push.fcm_service_account else set()
    return names | ({"push_server"} if push.push_server else set())


def platform_senders(senders: Collection[str]) -> dict[str, str]:
    """iOS goes to APNs, Android to FCM; push_server serves a platform without either."""
    routes = {}
    for platform, native in ((IOS, "apns"), (ANDROID, "fcm")):
        if native in senders:
            routes[platform] = native
        elif "push_server" in senders:
            routes[platform] = "push_server"
    return routes


def send_once(push: PushConfig, job: PushJob, timeout: float = 20.0) -> Outcome:
    """Send one job outside the server (``teamtalk-admin push test``): runs the global
    reactor until the sender answers, then stops it."""
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    senders = build_senders(reactor, push)
    answer: list[Outcome] = []

    async def go() -> None:
        for sender in senders.values():
            sender.start()
        sender = senders[job.sender]
        link = getattr(sender, "link", None)
        deadline = reactor.seconds() + timeout
        while link is not None and not link.connected and reactor.seconds() < deadline:
            await deferLater(reactor, 0.05, lambda: None)
        try:
            answer.append(await sender.send(job))
        finally:
            for each in senders.values():
                await each.stop()
            for thread in {getattr(s, "thread", None) for s in senders.values()} - {None}:
                await thread.stop()  # type: ignore[union-attr]

    def run() -> None:
        d = defer.ensureDeferred(go())
        d.addErrback(lambda f: answer.append(Outcome(Result.FAILED, f.getErrorMessage())))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run(installSignalHandlers=False)
    return answer[0] if answer else Outcome(Result.FAILED, "no answer")


def local_hour(now: float) -> int:
    return time.localtime(now).tm_hour


class Presence(Protocol):
    """What push asks the msg service: which users have a PC client online anywhere."""

    def pc_online(self, user_ids: list[int]) -> defer.Deferred[Collection[int]]: ...


class PushOutbox:
    """What the msg service calls of push: store functions that write each message with
    its outbox row (in the message's own transaction), and ``kick`` after each commit."""

    def __init__(self, coalesce: bool = False) -> None:
        #: Names this process's outbox rows; a new one per process, so rows left by an
        #: earlier run are taken over after ``outbox_grace`` like any other node's.
        self.node = secrets.token_hex(8)
        #: Pushes coalesce per conversation (``push.coalesce_window`` > 0): a 1:1 batch
        #: writes one outbox row per conversation, its newest message.
        self.coalesce = coalesce
        #: The worker deciding pushes, once the push service has started.
        self.worker: PushWorker | None = None

    @lock_order(pair_rows_first)
    def store_single_messages(self, txn: Txn, batch: Sequence[NewMessage]) -> list[Accepted]:
        """Store function for 1:1 batches: the messages and their outbox rows."""
        return push_store.store_single_messages(txn, batch, node=self.node, coalesce=self.coalesce)

    @lock_order(group_row_first)
    def store_group_message(
        self,
        txn: Txn,
        group_id: int,
        from_id: int,
        msg_type: int,
        content: bytes,
        created: int,
        sent: SendKey | None = None,
        *,
        origin: int = 0,
    ) -> StoredGroupMessage:
        """Store function for group messages: the message and its outbox row."""
        return push_store.store_group_message(
            txn, group_id, from_id, msg_type, content, created, sent, node=self.node,
            origin=origin,
        )  # fmt: skip

    def kick(self, _: object = None) -> None:
        """A message committed: decide its pushes now (not at the next tick)."""
        if self.worker is not None:
            self.worker.kick()


class PushService(TeamTalkService):
    name = "push"

    def __init__(
        self,
        reactor: Any,
        config: Config,
        store: StoreService,
        shared: SharedState | None,
        outbox: PushOutbox,
        presence: Presence,
    ) -> None:
        super().__init__(reactor, config)
        self.store = store
        self.shared = shared
        self.outbox = outbox
        self.presence = presence
        self.node = outbox.node
        self.counters = PushCounters()
        self.senders: dict[str, Sender] = {}
        self.queue: PushQueue | None = None
        self.worker: PushWorker | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        push = self.config.push
        store = self.store
        await store.ready
        shared = self.shared
        if shared is not None and shared.shared:
            self.queue = StreamQueue(shared.backend, store, self.reactor, push.lease, self.node)
        else:
            self.queue = StoreQueue(store, self.reactor, push.lease)
        await self.queue.start()
        self.senders = build_senders(self.reactor, push)
        for sender in self.senders.values():
            sender.start()
        rules = Rules(
            aes_key=self.config.msg.aes_key.encode(),
            senders=platform_senders(self.senders),
            night_start=push.night_start,
            night_end=push.night_end,
        )
        self.worker = PushWorker(
            self.reactor,
            store,
            self.queue,
            self.senders,
            rules,
            self.presence.pc_online,
            node=self.node,
            limits=Limits(
                max_attempts=push.max_attempts,
                max_age=push.max_age,
                max_queue=push.max_queue,
                max_in_flight=push.max_in_flight,
                retry_base=push.retry_base,
                retry_cap=push.retry_cap,
                outbox_grace=push.outbox_grace,
                coalesce_window=push.coalesce_window,
            ),
            local_hour=local_hour,
            counters=self.counters,
        )
        self.worker.start()
        self.outbox.worker = self.worker
        self.register_metrics()
        log.info(
            "push: senders {senders}, queue in {queue}",
            senders=", ".join(sorted(self.senders)),
            queue=self.queue.name,
        )

    def register_metrics(self) -> None:
        """Per-sender counters and the pushes being sent, read at scrape time."""
        counters = self.counters
        self.metrics.counters(
            "teamtalk_push",
            "Pushes by sender and outcome: queued, sent, retried (a try that will be "
            "repeated), failed (refused, dead token, or out of attempts: the dead letter), "
            "expired (older than push.max_age).",
            ["sender", "outcome"],
            lambda: [
                ((sender, outcome), n)
                for sender, by_outcome in counters.snapshot().items()
                for outcome, n in by_outcome.items()
            ],
        )
        worker = self.worker
        self.metrics.gauges(
            "teamtalk_push_in_flight",
            "Pushes this node is sending now.",
            [],
            lambda: one(worker.in_flight if worker is not None else 0),
        )

    async def stop(self) -> None:
        self.outbox.worker = None
        if self.worker is not None:
            await self.worker.stop()
        for sender in self.senders.values():
            await sender.stop()
        threads = {getattr(s, "thread", None) for s in self.senders.values()} - {None}
        for thread in threads:
            await thread.stop()  # type: ignore[union-attr]
