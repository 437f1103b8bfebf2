"""The TeamTalk PDU transport shared by every server-side listener and link.

``PduProtocol`` frames the byte stream into PDUs and hands each one to the handler that a
``CommandTable`` names for its command id. It knows nothing about users or messages.
"""

from teamtalk_py.wire.protocol import (
    CommandTable,
    PduFactory,
    PduProtocol,
    Request,
    echo_heartbeat,
)

__all__ = ["CommandTable", "PduFactory", "PduProtocol", "Request", "echo_heartbeat"]
