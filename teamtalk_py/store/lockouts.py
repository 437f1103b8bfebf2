"""Login lockouts that outlive Redis: the durable half of the failed-login lockout.

The failures themselves are counted in Redis (``msg/lockout.py``), cheap and shared. When
a name trips the lockout, the lock is also written here, with the time it ends, so that
every node keeps refusing it while Redis is unreachable or after Redis lost its keys (a
restart without persistence): a lockout degrades to "stricter", never to "no lockout".
Rows are written only when a lock trips and removed by the first login attempt after
the lock ended.
"""

from __future__ import annotations

from teamtalk_py.store.txn import Txn, upsert_sql


def locked_until(txn: Txn, name: str) -> int:
    """When the lock on ``name`` ends (Unix seconds); 0 when there is none."""
    row = txn.execute("SELECT locked_until FROM login_lockouts WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row is not None else 0


def lock(txn: Txn, name: str, until: int) -> None:
    """Lock ``name`` until ``until`` (a later lock wins over an earlier one)."""
    txn.execute(
        upsert_sql(
            txn.dialect,
            "login_lockouts",
            ("name", "locked_until"),
            ("name",),
            "locked_until = CASE WHEN locked_until > ? THEN locked_until ELSE ? END",
        ),
        (name, until, until, until),
    )


def unlock(txn: Txn, name: str) -> None:
    txn.execute("DELETE FROM login_lockouts WHERE name = ?", (name,))
