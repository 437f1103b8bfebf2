"""Reading a running server's ``/metrics`` from the outside (tests and the benchmark)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from teamtalk_testing.ports import LOOPBACK

__all__ = ["metric_value"]


def metric_value(ops_port: int, sample: str, **labels: str) -> float | None:
    """The sum of the samples named ``sample`` (``teamtalk_messages_total``, not the
    family's name) whose labels include ``labels``, in the /metrics of the ops listener on
    ``ops_port``; None when no sample matches."""
    url = f"http://{LOOPBACK}:{ops_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = [
        found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == sample and labels.items() <= found.labels.items()
    ]
    return sum(values) if values else None
