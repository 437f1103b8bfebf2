"""Send facts: which connection sent which stored message, so that a resend after a lost
ack is answered with the stored id instead of being stored a second time.

Every message that carries a client ``create_time`` leaves one row in ``message_sends``:
its *send digest* (sender, client category, session, type, create_time and payload: what
a resend repeats byte for byte, see ``msg/intake.py``), its message id, the connection it
came on and when it was stored. A recognised resend leaves a row too, naming the message
it was matched to (a *claim*), so that the same connection never takes one stored message
for two of its own.

The rows are written by the store functions of ``messages`` and ``groups`` in the same
transaction as the message they name, and looked up there: a fact is exactly as durable as
its message (a node killed right after the COMMIT leaves both, a failed write neither), and
every node of a cluster sees it at once because they share the database. Rows older than
the resend window are deleted by ``prune``.

The rule itself (``ResendMatcher.first_copy``): a message is the resend of a stored one
with the same digest that came on *another* connection and that this connection has not
matched yet, the oldest first. Two messages of one connection are never one message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from teamtalk_py.store.txn import Txn

#: Seconds during which a stored message can be recognised as the first copy of a resend.
RESEND_WINDOW = 600

#: Keys looked up per statement.
_CHUNK = 200
#: Rows deleted per ``prune`` call, so a big backlog never stalls the writer for long.
PRUNE_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class SendKey:
    """One message as it arrived: what a resend repeats, and the connection it came on."""

    #: 16-byte digest of sender, client category, session, type, create_time and payload.
    digest: bytes
    #: The sending connection, unique in the cluster (``MsgConnection.connection_id``).
    connection: int
    #: The sender and the client's ``create_time``, also inside the digest: the index
    #: leads with them, so a busy node's new facts land at the end of each sender's range
    #: instead of at random places in one big index of digests.
    sender: int
    client_time: int
    #: False when the connection is known to have no stored message to resend
    #: (``other_connection_sent``): the fact is written, nothing is looked up.
    lookup: bool = True


@dataclass(eq=False, slots=True)
class FirstCopy:
    """A stored message a resend can be matched to (compared by identity)."""

    msg_id: int
    #: Server time the message was stored at.
    created: int
    #: The connection it first came on.
    connection: int
    #: Oldest first: the message id for stored rows, after them the job's own messages.
    position: int


@dataclass(slots=True)
class ResendMatcher:
    """Recognises resends among the messages of one store job, message by message.

    It reads the stored facts of every digest in the job with one query; the job's own new
    messages and claims are added as it goes (``new``, ``claim``), so a resend later in the
    same job sees a first copy earlier in it. ``write`` inserts the job's rows once their
    message ids are known.
    """

    _facts: dict[bytes, list[tuple[FirstCopy, int]]] = field(default_factory=dict)
    _rows: list[tuple[SendKey, FirstCopy]] = field(default_factory=list)

    @classmethod
    def load(cls, txn: Txn, keys: Iterable[SendKey], since: int) -> ResendMatcher:
        """The facts of ``keys``' digests stored at ``since`` or later."""
        matcher = cls()
        wanted = sorted({(key.sender, key.client_time, key.digest) for key in keys if key.lookup})
        copies: dict[tuple[bytes, int], FirstCopy] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            # One index probe per key (an OR of ANDs; both engines use the index for
            # each term): a tenth of the cost of a statement per sender.
            rows = txn.execute(
                "SELECT send_key, msg_id, connection, created FROM message_sends WHERE ("
                + " OR ".join(["(sender_id = ? AND client_time = ? AND send_key = ?)"] * len(chunk))
                + ") AND created >= ? ORDER BY id",
                (*(value for key in chunk for value in key), since),
            ).fetchall()
            for digest, msg_id, connection, created in rows:
                digest, msg_id, connection = bytes(digest), int(msg_id), int(connection)
                copy = copies.get((digest, msg_id))
                if copy is None:  # the first row of a message is its first copy
                    copy = copies[digest, msg_id] = FirstCopy(
                        msg_id, int(created), connection, msg_id
                    )
                matcher._facts.setdefault(digest, []).append((copy, connection))
        return matcher

    def first_copy(self, key: SendKey) -> FirstCopy | None:
        """The stored message ``key`` resends, or None when it is a new message."""
        facts = self._facts.get(key.digest)
        if not facts:
            return None
        mine = {id(copy) for copy, connection in facts if connection == key.connection}
        best: FirstCopy | None = None
        for copy, connection in facts:
            if connection == key.connection or id(copy) in mine:
                continue
            if best is None or copy.position < best.position:
                best = copy
        return best

    def claim(self, key: SendKey, copy: FirstCopy) -> None:
        """Record that ``key``'s connection resent ``copy``."""
        self._facts.setdefault(key.digest, []).append((copy, key.connection))
        self._rows.append((key, copy))

    def new(self, key: SendKey, created: int, position: int) -> FirstCopy:
        """Record a new message of the job; set its ``msg_id`` before ``write``."""
        copy = FirstCopy(0, created, key.connection, (1 << 62) + position)
        self.claim(key, copy)
        return copy

    def write(self, txn: Txn) -> None:
        """Insert the job's facts (every new message's ``msg_id`` must be set by now)."""
        txn.executemany(
            "INSERT INTO message_sends "
            "(sender_id, client_time, send_key, msg_id, connection, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (key.sender, key.client_time, key.digest, copy.msg_id, key.connection,
                 copy.created)
                for key, copy in self._rows
            ],
        )  # fmt: skip


def other_connection_sent(txn: Txn, sender: int, connection: int, since: int) -> bool:
    """Whether another connection of ``sender`` left a fact at ``since`` or later.

    When it did not, nothing ``connection`` sends can be a resend: at most one connection
    per client category is open at a time, so no other connection's message can come
    after this one started. Run it as a write job, behind the writes already queued.
    """
    row = txn.execute(
        "SELECT 1 FROM message_sends WHERE sender_id = ? AND connection <> ? AND created >= ? "
        "LIMIT 1",
        (sender, connection, since),
    ).fetchone()
    return row is not None


def prune(txn: Txn, before: int) -> int:
    """Delete up to ``PRUNE_CHUNK`` facts stored before ``before``; how many went.

    Rows are deleted by id range (the primary key, in storing order on every engine), so
    the statement never needs an index on ``created``.
    """
    row = txn.execute("SELECT MIN(id) FROM message_sends").fetchone()
    if row is None or row[0] is None:
        return 0
    first = int(row[0])
    newer = txn.execute(
        "SELECT id FROM message_sends WHERE id < ? AND created >= ? ORDER BY id LIMIT 1",
        (first + PRUNE_CHUNK, before),
    ).fetchone()
    end = int(newer[0]) if newer is not None else first + PRUNE_CHUNK
    txn.execute("DELETE FROM message_sends WHERE id < ?", (end,))
    return txn.rowcount
