"""Where users may log in to file transfer tasks from: the durable half of
``file/permits.py``.

A permit is written here as well as kept in the file service's memory, so that a file
service that restarted (an offline upload resumed afterwards) or another file service of
the cluster sharing the database accepts the same logins. One row per (task, user,
address); rows older than the permits' lifetime go whenever a permit is written.
"""

from __future__ import annotations

from collections.abc import Iterable

from teamtalk_py.store.txn import Txn, upsert_sql


def grant(
    txn: Txn, task_id: str, user_id: int, addresses: Iterable[str], now: int, ttl: int
) -> None:
    txn.execute("DELETE FROM file_login_permits WHERE granted < ?", (now - ttl,))
    sql = upsert_sql(
        txn.dialect,
        "file_login_permits",
        ("task_id", "user_id", "address", "granted"),
        ("task_id", "user_id", "address"),
        "granted = ?",
    )
    for address in addresses:
        txn.execute(sql, (task_id, user_id, address, now, now))


def allows(txn: Txn, task_id: str, user_id: int, address: str, since: int) -> bool:
    row = txn.execute(
        "SELECT 1 FROM file_login_permits"
        " WHERE task_id = ? AND user_id = ? AND address = ? AND granted >= ?",
        (task_id, user_id, address, since),
    ).fetchone()
    return row is not None
