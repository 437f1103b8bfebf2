"""Writing into our store: the importer's checkpoints and the dialect-specific statements.

Every page of source rows is written in ONE transaction together with its phase's
checkpoint (``import_progress``), so a crash leaves either the whole page and its
checkpoint or neither: the next run continues after the last committed page and never
writes a row twice.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from teamtalk_py.store.txn import Dialect, Txn, placeholders, upsert_sql


@dataclass
class Phase:
    """One step of the import and how far it got."""

    name: str
    last_id: int = 0
    done: bool = False
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, key: str, n: int = 1) -> None:
        if n:
            self.counts[key] += n


_SAVE = {
    dialect: upsert_sql(
        dialect,
        "import_progress",
        ("phase", "last_id", "done", "counts", "updated"),
        ("phase",),
        "last_id = ?, done = ?, counts = ?, updated = ?",
    )
    for dialect in Dialect
}


def load_phases(txn: Txn) -> dict[str, Phase]:
    rows = txn.execute("SELECT phase, last_id, done, counts FROM import_progress").fetchall()
    return {
        name: Phase(name, int(last), bool(done), Counter(json.loads(counts or "{}")))
        for name, last, done, counts in rows
    }


def save_phase(txn: Txn, phase: Phase) -> None:
    counts = json.dumps(dict(phase.counts), sort_keys=True)
    now = int(time.time())
    done = int(phase.done)
    txn.execute(
        _SAVE[txn.dialect],
        (phase.name, phase.last_id, done, counts, now, phase.last_id, done, counts, now),
    )


def delete_phase(txn: Txn, name: str) -> None:
    txn.execute("DELETE FROM import_progress WHERE phase = ?", (name,))


def new_value(dialect: Dialect, column: str) -> str:
    """The value an upsert tried to insert into ``column``."""
    return f"excluded.{column}" if dialect is Dialect.SQLITE else f"VALUES({column})"


def upsert(
    dialect: Dialect,
    table: str,
    columns: tuple[str, ...],
    key: tuple[str, ...],
    keep: tuple[str, ...] = (),
) -> str:
    """Insert, or overwrite the existing row's columns (but ``key`` and ``keep``) with the
    new values."""
    fixed = set(key) | set(keep)
    update = ", ".join(f"{c} = {new_value(dialect, c)}" for c in columns if c not in fixed)
    return upsert_sql(dialect, table, columns, key, update)


def insert_ignore(dialect: Dialect, table: str, columns: tuple[str, ...]) -> str:
    """Insert unless a unique key is taken (``rowcount`` counts the rows inserted)."""
    values = ", ".join("?" * len(columns))
    names = ", ".join(columns)
    if dialect is Dialect.SQLITE:
        return f"INSERT INTO {table} ({names}) VALUES ({values}) ON CONFLICT DO NOTHING"
    return f"INSERT IGNORE INTO {table} ({names}) VALUES ({values})"


def greatest(dialect: Dialect) -> str:
    return "MAX" if dialect is Dialect.SQLITE else "GREATEST"


def update_by_key(
    txn: Txn,
    table: str,
    key: str,
    assignments: dict[str, str],
    rows: Sequence[Sequence[Any]],
    scope: tuple[str, Any] | None = None,
    chunk: int = 250,
) -> None:
    """Update many rows of ``table`` with a few statements instead of one per row.

    Each row is ``(key value, *new values)`` in the order of ``assignments``, which maps a
    column to its new value's SQL with ``{new}`` standing for the row's value (``"{new}"``
    to overwrite). One ``UPDATE ... SET column = CASE key WHEN ? THEN ? ... END WHERE key
    IN (...)`` per ``chunk`` rows: on MariaDB a statement per row is a round trip per row.
    ``scope`` (column, value) narrows every statement (``group_id`` of a group's members).
    Table and column names are code constants.
    """
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        sets, params = [], []
        for n, (column, template) in enumerate(assignments.items(), start=1):
            case = "CASE " + key + " " + " ".join(["WHEN ? THEN ?"] * len(part)) + " END"
            sets.append(f"{column} = " + template.format(new=case))
            params += [v for row in part for v in (row[0], row[n])]
        where = f"{key} IN ({placeholders(len(part))})"
        params += [row[0] for row in part]
        if scope is not None:
            where = f"{scope[0]} = ? AND " + where
            params.insert(len(params) - len(part), scope[1])
        txn.execute(f"UPDATE {table} SET {', '.join(sets)} WHERE {where}", params)


def ids_present(txn: Txn, table: str, ids: Sequence[int]) -> set[int]:
    """Which of ``ids`` are rows of ``table`` (a code constant)."""
    unique = sorted(set(ids))
    found: set[int] = set()
    for i in range(0, len(unique), 500):
        chunk = unique[i : i + 500]
        rows = txn.execute(
            f"SELECT id FROM {table} WHERE id IN ({placeholders(len(chunk))})", chunk
        ).fetchall()
        found.update(int(r[0]) for r in rows)
    return found


def names_taken(txn: Txn, table: str, names: Sequence[str]) -> dict[str, int]:
    """name -> id of the rows of ``table`` among ``names``."""
    unique = sorted(set(names))
    taken: dict[str, int] = {}
    for i in range(0, len(unique), 500):
        chunk = unique[i : i + 500]
        rows = txn.execute(
            f"SELECT name, id FROM {table} WHERE name IN ({placeholders(len(chunk))})", chunk
        ).fetchall()
        taken.update((name, int(id_)) for name, id_ in rows)
    return taken


def note(txn: Txn, kind: str, source_table: str, source_id: int, value: int) -> None:
    txn.execute(
        upsert_sql(
            txn.dialect,
            "import_notes",
            ("kind", "source_table", "source_id", "value"),
            ("kind", "source_table", "source_id"),
            "value = " + new_value(txn.dialect, "value"),
        ),
        (kind, source_table, source_id, value),
    )


def notes(txn: Txn, kind: str) -> list[tuple[str, int, int]]:
    """``(source_table, source_id, value)`` of every note of ``kind``."""
    rows = txn.execute(
        "SELECT source_table, source_id, value FROM import_notes WHERE kind = ? "
        "ORDER BY source_table, source_id",
        (kind,),
    ).fetchall()
    return [(table, int(source_id), int(value)) for table, source_id, value in rows]
