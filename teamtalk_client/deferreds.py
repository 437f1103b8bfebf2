"""Coroutine functions that return Deferreds.

The library's asynchronous calls are written as ``async def`` and exposed as functions
returning a ``Deferred``, so callers can ``await`` them, chain callbacks on them (the
benchmark's worker loops do) or use them from ``inlineCallbacks`` code alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred

_P = ParamSpec("_P")
_T = TypeVar("_T")


def returns_deferred(
    fn: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Deferred[_T]]:
    """Run a coroutine function as a Deferred, so callers can both `await` the result and
    use it from `inlineCallbacks` or plain callback chains (the benchmark does the latter)."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        return Deferred.fromCoroutine(fn(*args, **kwargs))

    return wrapper
