"""Numbers and their presentation: percentiles, rates, client CPU, the table, the JSON.

Latencies travel between processes as raw lists of seconds (a few hundred thousand floats
at most in any scenario), so merging is concatenation and the percentiles are exact.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import resource
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: A client process above this share of one core during the measured window is reported
#: as saturated: its figures may measure the load generator rather than the server.
SATURATION_PERCENT = 90.0


def process_cpu_seconds() -> float:
    """User + system CPU of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    """User + system CPU of this process's finished, waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: Iterable[float]) -> dict[str, Any]:
    """count, mean, p50, p90, p99 and max, in milliseconds (None values when empty)."""
    values = sorted(seconds)
    if not values:
        return {
            "count": 0,
            "mean_ms": None,
            "p50_ms": None,
            "p90_ms": None,
            "p99_ms": None,
            "max_ms": None,
        }
    return {
        "count": len(values),
        "mean_ms": round(sum(values) / len(values) * 1000, 3),
        "p50_ms": round(percentile(values, 50) * 1000, 3),
        "p90_ms": round(percentile(values, 90) * 1000, 3),
        "p99_ms": round(percentile(values, 99) * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3),
    }


def rate(count: int, seconds: float | None) -> float | None:
    if not seconds or seconds <= 0:
        return None
    return round(count / seconds, 1)


def client_cpu(reports: Sequence[dict[str, Any]], wall: float | None) -> dict[str, Any]:
    """Merge the workers' ``cpu_seconds`` over the measured window of ``wall`` seconds."""
    per_process = [r.get("cpu_seconds", 0.0) for r in reports]
    total = sum(per_process)
    result: dict[str, Any] = {
        "processes": len(reports),
        "cpu_seconds": round(total, 3),
        "wall_seconds": round(wall, 3) if wall else None,
        "cpu_percent": None,
        "per_process_cpu_percent": [],
        "saturated": False,
    }
    if wall and wall > 0:
        percents = [round(s / wall * 100, 1) for s in per_process]
        result["cpu_percent"] = round(total / wall * 100, 1)
        result["per_process_cpu_percent"] = percents
        result["saturated"] = any(p >= SATURATION_PERCENT for p in percents)
    return result


# --------------------------------------------------------------------------------------
# Output


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def render_table(
    title: str,
    rows: Sequence[tuple[str, Any]],
    latencies: Sequence[tuple[str, dict[str, Any]]] = (),
) -> str:
    """A two-column table of figures, then a latency table (count, p50, p90, p99, max)."""
    lines = [title, "=" * len(title)]
    if rows:
        width = max(len(k) for k, _ in rows)
        lines += [f"  {k:<{width}}  {_fmt(v)}" for k, v in rows]
    if latencies:
        width = max(len("latency (ms)"), *(len(k) for k, _ in latencies))
        columns = "".join(f" {c:>9}" for c in ("p50", "p90", "p99", "max"))
        head = f"  {'latency (ms)':<{width}}  {'count':>8}{columns}"
        lines += ["", head, "  " + "-" * (len(head) - 2)]
        for name, s in latencies:
            lines.append(
                f"  {name:<{width}}  {_fmt(s.get('count')):>8} {_fmt(s.get('p50_ms')):>9} "
                f"{_fmt(s.get('p90_ms')):>9} {_fmt(s.get('p99_ms')):>9} {_fmt(s.get('max_ms')):>9}"
            )
    return "\n".join(lines)


def cpu_rows(client: dict[str, Any], server: dict[str, Any] | None) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    percents = client.get("per_process_cpu_percent") or []
    detail = f" ({', '.join(f'{p:g}%' for p in percents)})" if len(percents) > 1 else ""
    cpu = client.get("cpu_percent")
    rows.append(
        (
            f"client CPU, {client['processes']} process(es)",
            f"{cpu:g}% of one core{detail}" if cpu is not None else "-",
        )
    )
    if client.get("saturated"):
        rows.append(("WARNING", "a client process was saturated: add --processes"))
    if server:
        if server.get("cpu_percent") is not None:
            rows.append(("server CPU", f"{server['cpu_percent']:g}% of one core"))
        if server.get("rss_kb_after") is not None:
            rows.append(("server RSS after", f"{server['rss_kb_after'] / 1024:.1f} MiB"))
    return rows


def default_json_path(scenario: str, now: datetime.datetime | None = None) -> Path:
    now = now or datetime.datetime.now()
    return Path("bench-results") / f"{scenario}-{now.strftime('%Y%m%d-%H%M%S')}.json"


def write_json(path: Path, document: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path
