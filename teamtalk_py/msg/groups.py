"""Group sessions on the msg node.

Groups are the next capability to land (fixed and temporary groups, members, group
messages, unread state). Until then a group message is refused with ``msg_id = 0`` in its
ack, and group sessions have no history, unread count or latest id.
"""

from __future__ import annotations

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2


class Groups:
    def __init__(self, service) -> None:
        self.service = service

    async def handle_group_message(self, conn, request) -> None:
        msg = request.message
        conn.send(
            B.CID_MSG_DATA_ACK,
            Message_pb2.IMMsgDataAck(
                user_id=conn.user_id,
                session_id=msg.to_session_id,
                msg_id=0,
                session_type=B.SESSION_TYPE_GROUP,
            ),
            request.seq,
        )

    async def mark_read(self, user_id: int, group_id: int) -> bool:
        return False

    async def unread_counts(self, user_id: int) -> list:
        return []

    async def history(self, user_id: int, group_id: int, msg_id_begin: int, count: int) -> list:
        return []

    async def latest_msg_id(self, user_id: int, group_id: int) -> int:
        return 0

    async def messages_by_ids(self, user_id: int, group_id: int, ids: list[int]) -> list:
        return []

    def deliver_from_route(self, message) -> None:
        pass
