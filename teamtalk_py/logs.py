"""Log observers for ``twistd --logger``.

``twistd --logger teamtalk_py.logs.json_observer teamtalk`` writes one JSON object per
line to stdout (for journald or a log shipper) instead of Twisted's text format.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json_observer() -> ILogObserver:
    return jsonFileLogObserver(sys.stdout)
