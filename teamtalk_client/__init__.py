"""A TeamTalk client library: discovery, connections, login, chat and file transfer.

It talks to any TeamTalk msg, file or login server (teamtalk_py or the original C++ one).
The tests and the benchmark use it to check the server from the outside, which is why it
is a package of its own and shares no framing or dispatch code with ``teamtalk_py``: a bug
in a shared codec would be invisible to every test. It shares only what is generated from
the protocol description (the protobuf modules and the command -> message class table).
"""

from teamtalk_client.discovery import (
    Discovery,
    DiscoveryError,
    DiscoveryFormatError,
    discover,
    parse_discovery,
)
from teamtalk_client.extension import ExtensionClient, result_name
from teamtalk_client.files import (
    BLOCK_SIZE,
    BlockSource,
    FileLoginRefused,
    TransferFailed,
    file_login,
    pull_file,
    send_state,
)
from teamtalk_client.pdu import (
    ANSWER_CID,
    HEADER_SIZE,
    Pdu,
    answer_cid,
    command_name,
    encode_pdu,
    pack_header,
    unpack_header,
)
from teamtalk_client.protocol import FramingError, TeamTalkClientProtocol, connect
from teamtalk_client.session import TeamTalkSession
from teamtalk_client.text import DEFAULT_AES_KEY, decrypt_text, encrypt_text

__all__ = [
    "ANSWER_CID",
    "BLOCK_SIZE",
    "DEFAULT_AES_KEY",
    "HEADER_SIZE",
    "BlockSource",
    "Discovery",
    "DiscoveryError",
    "DiscoveryFormatError",
    "ExtensionClient",
    "FileLoginRefused",
    "FramingError",
    "Pdu",
    "TeamTalkClientProtocol",
    "TeamTalkSession",
    "TransferFailed",
    "answer_cid",
    "command_name",
    "connect",
    "decrypt_text",
    "discover",
    "encode_pdu",
    "encrypt_text",
    "file_login",
    "pack_header",
    "parse_discovery",
    "pull_file",
    "result_name",
    "send_state",
    "unpack_header",
]
