"""``Contacts``: the friend-request feature of one msg node, without sockets.

Handlers (``msg/contacts_handlers.py``) call it with the connection's user as the acting
user; it answers with a result code and the data of the answer, and tells other users
through ``notify`` (which reaches their opted-in connections on any node and says how many
of them were on this node). Every decision is made by one store transaction
(``store/contacts.py``); this class checks the input, builds the messages and records
which notifies reached their user, so that the rest is delivered at the next hello.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from google.protobuf.message import Message

from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.store import contacts as rows

#: Longest search query, in characters (after trimming).
MAX_QUERY_LENGTH = 64

_OUTCOME_CODES = {
    rows.NO_SUCH_USER: X.EXT_RESULT_NO_SUCH_USER,
    rows.ALREADY_FRIENDS: X.EXT_RESULT_ALREADY_FRIENDS,
    rows.REQUEST_PENDING: X.EXT_RESULT_REQUEST_PENDING,
    rows.NO_SUCH_REQUEST: X.EXT_RESULT_NO_SUCH_REQUEST,
}
_RELATIONS = {
    "friend": X.EXT_RELATION_FRIEND,
    "sent": X.EXT_RELATION_REQUEST_SENT,
    "received": X.EXT_RELATION_REQUEST_RECEIVED,
}

#: ``notify(user_ids, command_id, message)``: to those users' connections that opted in
#: to contacts, on any node; returns how many of them were on this node.
Notify = Callable[[list[int], int, Message], int]


class ContactsSettings(Protocol):
    @property
    def mode(self) -> str: ...

    @property
    def max_search_results(self) -> int: ...

    @property
    def max_note_length(self) -> int: ...


def brief(user: rows.UserBrief, relation: int | None = None) -> X.ExtUserBrief:
    """The public part of a user, as the extension sends it."""
    message = X.ExtUserBrief(
        user_id=user.id,
        nick_name=user.nick,
        real_name=user.name,
        avatar_url=user.avatar,
        gender=user.sex,
    )
    if relation is not None:
        message.relation = relation  # type: ignore[assignment]
    return message


def request_message(request: rows.FriendRequest, peer: rows.UserBrief | None) -> X.ExtFriendRequest:
    message = X.ExtFriendRequest(
        request_id=request.id,
        from_user_id=request.from_id,
        to_user_id=request.to_id,
        note=request.note,
        create_time=request.created,
        state=request.state,  # type: ignore[arg-type]
    )
    if request.answered:
        message.answer_time = request.answered
    if peer is not None:
        message.peer.CopyFrom(brief(peer))
    return message


def friend_message(friend: rows.Friend) -> X.ExtFriend:
    return X.ExtFriend(user=brief(friend.user), remark=friend.remark, since=friend.since)


class Contacts:
    """Friend requests and friendships for the users of one node."""

    def __init__(self, store: Any, clock: Any, settings: ContactsSettings, notify: Notify) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.notify = notify

    def now(self) -> int:
        return int(self.clock.seconds())

    @property
    def friends_only(self) -> bool:
        """``contacts`` mode: buddy lists show friends, 1:1 messages need friendship."""
        return self.settings.mode == "contacts"

    def _too_long(self, *texts: str) -> bool:
        return any(len(text) > self.settings.max_note_length for text in texts)

    # -- queries ---------------------------------------------------------------------

    async def search(
        self, user_id: int, query: str, limit: int
    ) -> tuple[int, list[X.ExtUserBrief]]:
        query = query.strip()
        if not query or len(query) > MAX_QUERY_LENGTH:
            return X.EXT_RESULT_BAD_REQUEST, []
        cap = self.settings.max_search_results
        limit = min(limit, cap) if limit > 0 else cap
        found = await self.store.read(rows.search_users, query, limit)
        relations = await self.store.read(rows.relations, user_id, [u.id for u in found])
        result = []
        for user in found:
            relation = (
                X.EXT_RELATION_SELF
                if user.id == user_id
                else _RELATIONS.get(relations.get(user.id, ""), X.EXT_RELATION_NONE)
            )
            result.append(brief(user, relation))
        return X.EXT_RESULT_OK, result

    async def friends(self, user_id: int) -> list[X.ExtFriend]:
        return [friend_message(f) for f in await self.store.read(rows.list_friends, user_id)]

    async def pending(
        self, user_id: int
    ) -> tuple[list[X.ExtFriendRequest], list[X.ExtFriendRequest]]:
        """(incoming, outgoing) pending requests, each with the other side as ``peer``."""
        incoming, outgoing = await self.store.read(rows.pending_requests, user_id)
        peers = await self._briefs([r.from_id for r in incoming] + [r.to_id for r in outgoing])
        return (
            [request_message(r, peers.get(r.from_id)) for r in incoming],
            [request_message(r, peers.get(r.to_id)) for r in outgoing],
        )

    async def are_friends(self, user_id: int, other_id: int) -> bool:
        return bool(await self.store.read(rows.are_friends, user_id, other_id))

    async def visible_user_ids(self, user_id: int) -> set[int]:
        """Who ``user_id``'s buddy list shows in ``contacts`` mode: themself and friends."""
        return {user_id, *await self.store.read(rows.friend_ids, user_id)}

    # -- changes ---------------------------------------------------------------------

    async def ask(self, user_id: int, to_id: int, note: str, remark: str) -> tuple[int, int]:
        """A friend request by ``user_id``: (result code, request id or 0)."""
        if to_id == user_id or to_id == 0 or self._too_long(note, remark):
            return X.EXT_RESULT_BAD_REQUEST, 0
        outcome, request = await self.store.write(
            rows.ask, user_id, to_id, note, remark, now=self.now()
        )
        if outcome is not None:
            return _OUTCOME_CODES[outcome], request.id if request is not None else 0
        assert request is not None
        peers = await self._briefs([user_id])
        notify = X.IMExtFriendRequestNotify(request=request_message(request, peers.get(user_id)))
        if self.notify([to_id], X.CID_EXT_FRIEND_REQUEST_NOTIFY, notify):
            await self.store.write(rows.mark_delivered, request_ids=[request.id])
        return X.EXT_RESULT_OK, request.id

    async def answer(
        self, user_id: int, request_id: int, accept: bool, remark: str
    ) -> tuple[int, X.ExtFriend | None]:
        """``user_id`` accepts or declines ``request_id``: (result code, new friend)."""
        if self._too_long(remark):
            return X.EXT_RESULT_BAD_REQUEST, None
        outcome, request = await self.store.write(
            rows.answer, user_id, request_id, accept, remark, now=self.now()
        )
        if outcome is not None:
            return _OUTCOME_CODES[outcome], None
        assert request is not None
        peers = await self._briefs([user_id, request.from_id])
        notify = X.IMExtFriendAnswerNotify(request=request_message(request, peers.get(user_id)))
        if self.notify([request.from_id], X.CID_EXT_FRIEND_ANSWER_NOTIFY, notify):
            await self.store.write(rows.mark_delivered, answer_ids=[request.id])
        if not accept:
            return X.EXT_RESULT_OK, None
        asker = peers.get(request.from_id)
        new_friend = X.ExtFriend(remark=remark, since=request.answered)
        if asker is not None:
            new_friend.user.CopyFrom(brief(asker))
        return X.EXT_RESULT_OK, new_friend

    async def remove(self, user_id: int, friend_id: int) -> int:
        removed = await self.store.write(rows.remove_friend, user_id, friend_id)
        if not removed:
            return X.EXT_RESULT_NOT_FRIENDS
        self.notify(
            [friend_id],
            X.CID_EXT_FRIEND_REMOVED_NOTIFY,
            X.IMExtFriendRemovedNotify(user_id=user_id),
        )
        return X.EXT_RESULT_OK

    # -- delivery to users who were away -----------------------------------------------

    async def deliver_pending(self, user_id: int, send: Callable[[int, Message], None]) -> int:
        """Send one connection the requests and answers its user has not had yet (at
        hello), then mark them delivered; returns how many were sent."""
        requests, answers = await self.store.read(rows.undelivered, user_id)
        if not requests and not answers:
            return 0
        peers = await self._briefs([r.from_id for r in requests] + [r.to_id for r in answers])
        for request in requests:
            message = request_message(request, peers.get(request.from_id))
            send(X.CID_EXT_FRIEND_REQUEST_NOTIFY, X.IMExtFriendRequestNotify(request=message))
        for request in answers:
            message = request_message(request, peers.get(request.to_id))
            send(X.CID_EXT_FRIEND_ANSWER_NOTIFY, X.IMExtFriendAnswerNotify(request=message))
        await self.store.write(
            rows.mark_delivered, [r.id for r in requests], [r.id for r in answers]
        )
        return len(requests) + len(answers)

    async def delivered_elsewhere(self, command_id: int, body: bytes) -> None:
        """A notify relayed from another node reached a connection here: record it."""
        if command_id == X.CID_EXT_FRIEND_REQUEST_NOTIFY:
            request = X.IMExtFriendRequestNotify.FromString(body).request
            await self.store.write(rows.mark_delivered, request_ids=[request.request_id])
        elif command_id == X.CID_EXT_FRIEND_ANSWER_NOTIFY:
            request = X.IMExtFriendAnswerNotify.FromString(body).request
            await self.store.write(rows.mark_delivered, answer_ids=[request.request_id])

    async def _briefs(self, ids: Iterable[int]) -> dict[int, rows.UserBrief]:
        return await self.store.read(rows.briefs, list(ids))
