"""Login delays that outlive Redis: the durable half of the failed-login lockout.

The failures themselves are counted in Redis (``msg/lockout.py``), cheap and shared. When
a key (a name from an address, or an address) starts a delay, the delay is also written
here, with the time it ends, so that every node keeps applying it while Redis is
unreachable or after Redis lost its keys (a restart without persistence): a lockout
degrades to "stricter", never to "no lockout". A row's ``name`` is a digest of its key
(``SharedLoginLockout.durable_key``), not a login name. Rows are removed by the first login
attempt that sees them ended, and ended rows by every new one.
"""

from __future__ import annotations

from collections.abc import Sequence

from teamtalk_py.store.txn import Txn, placeholders, upsert_sql


def locked_until(txn: Txn, keys: Sequence[str]) -> int:
    """When the latest delay on any of ``keys`` ends (Unix seconds); 0 when none has one."""
    row = txn.execute(
        f"SELECT MAX(locked_until) FROM login_lockouts WHERE name IN ({placeholders(len(keys))})",
        tuple(keys),
    ).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def lock(txn: Txn, key: str, until: int, now: int) -> None:
    """Delay ``key`` until ``until`` (a later end wins over an earlier one); rows that
    ended before ``now`` go (the table holds current delays only)."""
    txn.execute("DELETE FROM login_lockouts WHERE locked_until < ?", (now,))
    txn.execute(
        upsert_sql(
            txn.dialect,
            "login_lockouts",
            ("name", "locked_until"),
            ("name",),
            "locked_until = CASE WHEN locked_until > ? THEN locked_until ELSE ? END",
        ),
        (key, until, until, until),
    )


def unlock(txn: Txn, keys: Sequence[str]) -> None:
    txn.execute(
        f"DELETE FROM login_lockouts WHERE name IN ({placeholders(len(keys))})", tuple(keys)
    )
