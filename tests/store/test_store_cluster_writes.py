"""Two nodes writing to one MariaDB at once, with no lock between their writers.

Two ``Database`` instances on the same database stand for two msg nodes. They store
messages of the same user pairs and the same groups concurrently; every message must be
stored exactly once, each relation's and group's ids must run 1, 2, 3 ... without a gap or
a repeat, and a deadlock between the two writers must be retried inside the store, never
reach the caller. Real clients repeat the same words, so many messages share a text.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from twisted.internet import defer, reactor

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import accounts, messages
from teamtalk_py.store import groups as g
from teamtalk_py.store.database import Database
from teamtalk_py.store.media import get_or_create_secret
from teamtalk_py.store.messages import NewMessage
from teamtalk_py.store.resends import SendKey
from teamtalk_py.store.service import StoreService
from teamtalk_py.store.txn import lock_order
from tests.store_support import MariaDBStoreCase, mysql_url
from tests.support import local_config

NOW = 1_700_000_000
TEXT = B.MSG_TYPE_SINGLE_TEXT
GROUP_TEXT = B.MSG_TYPE_GROUP_TEXT
#: Writes each node submits; they queue up and commit in batches of many jobs.
ROUNDS = 60
#: Seconds a writer waits at a crossing for the other node's writer to get there too.
CROSSING_WAIT = 3.0


def _held(db: Database) -> threading.Event:
    """Hold ``db``'s writer in a batch of its own until the event is set, so that every
    job submitted meanwhile runs in the next batch, together."""
    running, release = threading.Event(), threading.Event()

    def hold(txn: Any) -> None:
        running.set()
        release.wait(30)

    db.write(hold)
    # Once it runs, its batch is drawn: whatever comes now waits for the next one.
    assert running.wait(30), "the writer did not start the holding job"
    return release


def _deadlock_retries_metric(db: Database, scratch: Any) -> float:
    """``teamtalk_store_deadlock_retries_total`` as a node's /metrics shows it for ``db``."""
    service = StoreService(reactor, local_config(scratch))
    service.register_metrics(db)
    for line in service.metrics.exposition().decode().splitlines():
        if line.startswith("teamtalk_store_deadlock_retries_total "):
            return float(line.split()[1])
    raise AssertionError("no teamtalk_store_deadlock_retries_total")


class TwoNodeWriteTests(MariaDBStoreCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.other = await self.open_database(mysql_url(), self.scratch / "other")

        def add(txn: Any) -> list[int]:
            return [accounts.add_user(txn, f"u{n}", "pw", now=NOW) for n in range(6)]

        self.users = await self.database.write(add)
        self.groups = []
        for name in ("one", "two"):
            group, _ = await self.database.write(
                g.create_group, name, self.users[0], self.users, g.GROUP_NORMAL, now=NOW
            )
            self.groups.append(group.id)

    def _pairs(self) -> list[tuple[int, int]]:
        u = self.users
        return [(a, b) for a in u for b in u if a != b]

    def _node_writes(self, db: Database, node: int) -> list[defer.Deferred]:
        """One node's traffic: batches over every pair (in an order of its own) and group
        messages to both groups, all submitted at once so that batches overlap."""
        pairs = self._pairs()
        if node == 2:
            pairs.reverse()
        sent: list[defer.Deferred] = []
        for r in range(ROUNDS):
            batch = [
                NewMessage(a, b, TEXT, b"ok" if k % 2 else f"n{node} r{r} k{k}".encode(), NOW,
                           SendKey(f"{node}:{r}:{k}".encode().ljust(16, b"."), node, a, r))
                for k, (a, b) in enumerate(pairs[r % 7 :] + pairs[: r % 7])
            ]  # fmt: skip
            sent.append(db.write(messages.store_single_messages, batch))
            for group in self.groups if (r + node) % 2 else reversed(self.groups):
                sender = self.users[r % len(self.users)]
                sent.append(db.write(g.store_group_message, group, sender, GROUP_TEXT, b"hi", NOW))
        return sent

    async def test_every_message_once_with_gap_free_ids(self) -> None:
        first = self._node_writes(self.database, 1)
        second = self._node_writes(self.other, 2)
        # No error may reach a caller: gatherResults fails on the first one.
        results = await defer.gatherResults(first + second, consumeErrors=True)

        single_acks: Counter[tuple[int, int, int]] = Counter()
        group_acks: dict[int, list[int]] = {group: [] for group in self.groups}
        for result in results:
            if isinstance(result, list):
                for accepted in result:
                    self.assertIsNone(accepted.resend_of)
                    m = accepted.message
                    single_acks[(min(m.from_id, m.to_id), max(m.from_id, m.to_id), m.msg_id)] += 1
            else:
                group_acks[result.message.to_id].append(result.message.msg_id)
        # Each acked id is acked once.
        self.assertEqual(set(single_acks.values()), {1})

        sent_per_pair = 2 * ROUNDS  # every ordered pair once a round per node
        with self.database.sync_transaction() as txn:
            rows = txn.execute(
                "SELECT r.small_id, r.big_id, m.msg_id FROM messages m "
                "JOIN relations r ON r.id = m.relation_id"
            ).fetchall()
            lasts = txn.execute("SELECT small_id, big_id, last_msg_id FROM relations").fetchall()
            group_rows = txn.execute("SELECT group_id, msg_id FROM group_messages").fetchall()
            group_lasts = dict(txn.execute("SELECT id, last_msg_id FROM im_groups").fetchall())
            facts = txn.execute("SELECT COUNT(*), COUNT(DISTINCT send_key) FROM message_sends")
            fact_count, distinct_facts = facts.fetchone()  # type: ignore[misc]

        stored: dict[tuple[int, int], list[int]] = {}
        for small, big, msg_id in rows:
            stored.setdefault((small, big), []).append(msg_id)
        # An unordered pair gets both directions' messages: 2 per round per node.
        self.assertEqual(len(stored), len(self._pairs()) // 2)
        for pair, ids in stored.items():
            self.assertEqual(sorted(ids), list(range(1, 2 * sent_per_pair + 1)), pair)
        self.assertEqual({(a, b): n for a, b, n in lasts}, {p: 2 * sent_per_pair for p in stored})
        self.assertEqual(
            set(single_acks), {(a, b, i) for (a, b), ids in stored.items() for i in ids}
        )

        for group in self.groups:
            ids = sorted(i for gid, i in group_rows if gid == group)
            self.assertEqual(ids, list(range(1, 2 * ROUNDS + 1)))
            self.assertEqual(sorted(group_acks[group]), ids)
            self.assertEqual(group_lasts[group], 2 * ROUNDS)
        # One send fact per stored message, none written twice by a rerun batch.
        self.assertEqual((fact_count, distinct_facts), (len(rows), len(rows)))

    async def test_a_deadlock_reruns_the_batch_whole(self) -> None:
        """Force the classic crossing: node 1 holds pair A and wants pair B, node 2 holds
        B and wants A. InnoDB rolls one batch back; the store runs it again and both
        callers get their messages, each stored once."""
        a, b, c, d = self.users[:4]
        holding = {1: threading.Event(), 2: threading.Event()}

        def crossing(txn: Any, node: int, mine: tuple[int, int], theirs: tuple[int, int]) -> Any:
            first = messages.store_single_messages(txn, [NewMessage(*mine, TEXT, b"ok", NOW)])
            holding[node].set()
            holding[3 - node].wait(10)
            second = messages.store_single_messages(txn, [NewMessage(*theirs, TEXT, b"ok", NOW)])
            return first[0].message.msg_id, second[0].message.msg_id

        results = await defer.gatherResults(
            [
                self.database.write(crossing, 1, (a, b), (c, d)),
                self.other.write(crossing, 2, (c, d), (a, b)),
            ],
            consumeErrors=True,
        )
        self.assertEqual(sorted(results[0] + results[1]), [1, 1, 2, 2])
        retries = self.database.stats.deadlock_retries + self.other.stats.deadlock_retries
        self.assertGreaterEqual(retries, 1)
        with self.database.sync_transaction() as txn:
            count = txn.execute("SELECT COUNT(*) FROM messages").fetchone()
            unread = txn.execute("SELECT SUM(count) FROM unread").fetchone()
        self.assertEqual(count, (4,))
        self.assertEqual(int(unread[0]), 4)  # type: ignore[index]


class LockOrderTests(MariaDBStoreCase):
    """The writer runs a batch's message jobs in one global lock order (``txn.lock_order``)
    whatever order they came in, and answers them in arrival order."""

    async def test_message_jobs_run_sorted_after_the_others(self) -> None:
        ran: list[str] = []

        @lock_order(lambda name, key: key)
        def keyed(txn: Any, name: str, key: tuple[int, ...]) -> str:
            ran.append(name)
            return name

        def plain(txn: Any, name: str) -> str:
            ran.append(name)
            return name

        answered: list[str] = []
        release = _held(self.database)
        jobs = [
            self.database.write(keyed, "group 7", (1, 7)),
            self.database.write(plain, "read mark"),
            self.database.write(keyed, "pairs A", (0,)),
            self.database.write(keyed, "group 3", (1, 3)),
            self.database.write(keyed, "pairs B", (0,)),
            self.database.write(keyed, "group 3 again", (1, 3)),
            self.database.write(plain, "member change"),
        ]
        for job in jobs:
            job.addCallback(answered.append)
        release.set()
        await defer.gatherResults(jobs)
        self.assertEqual(
            ran,
            ["read mark", "member change", "pairs A", "pairs B", "group 3", "group 3 again",
             "group 7"],
        )  # fmt: skip
        self.assertEqual(
            answered,
            ["group 7", "read mark", "pairs A", "group 3", "pairs B", "group 3 again",
             "member change"],
        )  # fmt: skip


class TwoNodeLockOrderTests(MariaDBStoreCase):
    """Two nodes whose batches hold the same group and pair messages in opposite orders."""

    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.other = await self.open_database(mysql_url(), self.scratch / "other")

        def add(txn: Any) -> list[int]:
            return [accounts.add_user(txn, f"u{n}", "pw", now=NOW) for n in range(6)]

        self.users = await self.database.write(add)
        self.groups = []
        for name in ("one", "two", "three", "four"):
            group, _ = await self.database.write(
                g.create_group, name, self.users[0], self.users, g.GROUP_NORMAL, now=NOW
            )
            self.groups.append(group.id)

    async def test_crossing_group_and_pair_messages_do_not_deadlock(self) -> None:
        """Node 1's batch came in as [group B, pair, group A], node 2's as [group A, pair,
        group B]. In arrival order each would lock its first row, meet the other at the
        crossing, then want the row the other holds: a deadlock every time. Run in lock
        order, both start with the pair's rows, so one waits for the other's COMMIT."""
        a, b = self.users[:2]
        group_a, group_b = self.groups[:2]
        crossing = threading.Barrier(2)
        first_done: set[int] = set()

        def meet(node: int) -> None:
            # Only a node's first job, and only in its first run (a rerun goes straight on).
            if node in first_done:
                return
            first_done.add(node)
            try:
                crossing.wait(CROSSING_WAIT)
            except threading.BrokenBarrierError:
                pass  # the other writer waits for our locks: it never reaches the crossing

        @lock_order(g.group_row_first)
        def group_message(txn: Any, group: int, node: int) -> int:
            stored = g.store_group_message(txn, group, a, GROUP_TEXT, b"ok", NOW)
            meet(node)
            return stored.message.msg_id

        @lock_order(messages.pair_rows_first)
        def pair_message(txn: Any, node: int) -> int:
            (accepted,) = messages.store_single_messages(txn, [NewMessage(a, b, TEXT, b"ok", NOW)])
            meet(node)
            return accepted.message.msg_id

        sent: list[defer.Deferred] = []
        releases = []
        for node, db, groups in ((1, self.database, (group_b, group_a)),
                                 (2, self.other, (group_a, group_b))):  # fmt: skip
            releases.append(_held(db))
            sent += [
                db.write(group_message, groups[0], node),
                db.write(pair_message, node),
                db.write(group_message, groups[1], node),
            ]
        for release in releases:
            release.set()
        ids = await defer.gatherResults(sent, consumeErrors=True)
        # Node 1: group B, pair, group A; node 2: group A, pair, group B.
        self.assertEqual(sorted([ids[1], ids[4]]), [1, 2])
        self.assertEqual(sorted([ids[0], ids[5]]), [1, 2])  # group B
        self.assertEqual(sorted([ids[2], ids[3]]), [1, 2])  # group A
        self.assertEqual(self.database.stats.deadlock_retries, 0)
        self.assertEqual(self.other.stats.deadlock_retries, 0)

    async def test_interleaved_group_and_pair_messages_of_two_nodes(self) -> None:
        """Each node's writer gets its traffic in one go: one-to-one batches and group
        messages interleaved, the groups in an order of the node's own, many texts the
        same. Every message is stored once with gap-free ids; a deadlock InnoDB still finds
        (gap locks, two one-to-one jobs in a batch) is rerun, counted in the metric, and
        never reaches a caller."""
        pairs = [(x, y) for x in self.users for y in self.users if x != y]
        sent: list[defer.Deferred] = []
        releases = []
        group_sent: Counter[int] = Counter()
        for node, db in ((1, self.database), (2, self.other)):
            releases.append(_held(db))
            order = self.groups if node == 1 else self.groups[::-1]
            for r in range(ROUNDS):
                for k, group in enumerate(order[r % 4 :] + order[: r % 4]):
                    sender = self.users[(r + k) % len(self.users)]
                    text = b"ok" if k % 2 else f"g{node} {r} {k}".encode()
                    sent.append(db.write(g.store_group_message, group, sender, GROUP_TEXT, text,
                                         NOW))  # fmt: skip
                    group_sent[group] += 1
                    if k == 1:
                        chosen = pairs[r % 5 :: 5] if node == 1 else pairs[::-1][r % 5 :: 5]
                        batch = [
                            NewMessage(x, y, TEXT, b"ok" if j % 2 else f"{node} {r} {j}".encode(),
                                       NOW)
                            for j, (x, y) in enumerate(chosen)
                        ]  # fmt: skip
                        sent.append(db.write(messages.store_single_messages, batch))
        for release in releases:
            release.set()
        # No error may reach a caller: gatherResults fails on the first one.
        results = await defer.gatherResults(sent, consumeErrors=True)

        single_acks: Counter[tuple[int, int, int]] = Counter()
        group_acks: Counter[tuple[int, int]] = Counter()
        for result in results:
            if isinstance(result, list):
                for accepted in result:
                    m = accepted.message
                    single_acks[(min(m.from_id, m.to_id), max(m.from_id, m.to_id), m.msg_id)] += 1
            else:
                group_acks[(result.message.to_id, result.message.msg_id)] += 1
        with self.database.sync_transaction() as txn:
            rows = txn.execute(
                "SELECT r.small_id, r.big_id, m.msg_id FROM messages m "
                "JOIN relations r ON r.id = m.relation_id"
            ).fetchall()
            group_rows = txn.execute("SELECT group_id, msg_id FROM group_messages").fetchall()
        # 0 duplicated: no id acked twice, no row stored twice.
        self.assertEqual(set(single_acks.values()) | set(group_acks.values()), {1})
        self.assertEqual(len(set(rows)), len(rows))
        self.assertEqual(len(set(group_rows)), len(group_rows))
        # 0 lost: every acked message is stored, and nothing else is.
        self.assertEqual({tuple(row) for row in rows}, set(single_acks))
        self.assertEqual({tuple(row) for row in group_rows}, set(group_acks))
        self.assertEqual(sum(single_acks.values()), 2 * ROUNDS * len(pairs[::5]))
        for group in self.groups:
            ids = sorted(i for gid, i in group_rows if gid == group)
            self.assertEqual(ids, list(range(1, group_sent[group] + 1)))
        # Whatever deadlocks happened were rerun inside the store, as the metric shows.
        for db in (self.database, self.other):
            self.assertEqual(db.stats.failed_jobs, 0)
            self.assertEqual(_deadlock_retries_metric(db, self.scratch), db.stats.deadlock_retries)


class SharedSecretTests(MariaDBStoreCase):
    """Two nodes starting at once both create the shared signing secret (API tokens)."""

    def test_the_node_that_loses_the_insert_reads_the_winners_secret(self) -> None:
        """Node A looks (none yet), node B inserts and commits, A's insert is a duplicate:
        A gets B's secret, not an error (its snapshot predates B's row)."""
        with (
            self.database.sync_connection() as node_a,
            self.database.sync_connection() as node_b,
            node_a.transaction() as a,
        ):
            looked = a.execute("SELECT value FROM server_secrets WHERE name = ?", ("t",))
            assert looked.fetchone() is None  # A's snapshot starts here
            with node_b.transaction() as b:
                assert get_or_create_secret(b, "t", "from-b", now=NOW) == "from-b"
            assert get_or_create_secret(a, "t", "from-a", now=NOW) == "from-b"
