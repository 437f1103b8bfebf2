"""``settled``: await a call that may answer at once or with a Deferred.

Some collaborators answer from memory on one configuration and over the network on
another (the login lockout: this node's memory or the shared state; a port's
``stopListening``; a route or file link's ``stop``). ``await settled(x.call())`` takes
either, which keeps callers in the one idiom, ``async def`` + ``ensureDeferred``, without
``maybeDeferred``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def settled(value: Awaitable[T] | T) -> T:
    """``value`` itself, or what it fires with when it is a Deferred (or a coroutine)."""
    if isinstance(value, Awaitable):
        return await value
    return value
