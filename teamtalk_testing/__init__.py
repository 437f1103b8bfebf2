"""Running teamtalk_py from the outside, for the tests and the benchmark alike.

Free loopback ports (``ports``), ``twistd teamtalk`` subprocesses (``twistd``), and a
database and a Redis key prefix of one's own on the servers this machine runs
(``scratch``). It is neither in ``tests/`` (the benchmark may not import the tests) nor
in ``teamtalk_py`` (the server has no use for it).
"""

from teamtalk_testing.ports import LOOPBACK, free_port, loopback_endpoint
from teamtalk_testing.twistd import (
    TWISTD,
    ListenPorts,
    StandaloneServer,
    StartupError,
    TwistdProcess,
    get_msg_server,
)

__all__ = [
    "LOOPBACK",
    "TWISTD",
    "ListenPorts",
    "StandaloneServer",
    "StartupError",
    "TwistdProcess",
    "free_port",
    "get_msg_server",
    "loopback_endpoint",
]
