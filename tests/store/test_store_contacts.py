"""Contacts rows (``store/contacts.py``) on SQLite and MariaDB: every decision is one
transaction, so racing answers and racing requests cannot both win."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer

from teamtalk_py.store import accounts
from teamtalk_py.store import contacts as c
from tests.store_support import MariaDBStoreCase, SQLiteStoreCase, backend_url

NOW = 1_700_000_000


class ContactsStoreTests:
    database: Any
    data_dir: Path
    backend: str

    async def users(self, *names: str) -> list[int]:
        record = accounts.password_record("pw")
        return [
            await self.database.write(accounts.add_user, name, "pw", now=NOW, record=record)
            for name in names
        ]

    async def test_ask_and_accept_make_two_rows_with_each_sides_remark(self):
        """An accept marks the request, writes both friendship rows and is reported once."""
        alice, bob = await self.users("alice", "bob")
        outcome, request = await self.database.write(c.ask, alice, bob, "hi", "B", now=NOW)
        assert outcome is None and request.state == c.PENDING
        outcome, answered = await self.database.write(
            c.answer, bob, request.id, True, "A", now=NOW + 5
        )
        assert outcome is None
        assert (answered.state, answered.answered) == (c.ACCEPTED, NOW + 5)
        mine = await self.database.read(c.list_friends, alice)
        theirs = await self.database.read(c.list_friends, bob)
        assert [(f.user.id, f.remark, f.since) for f in mine] == [(bob, "B", NOW + 5)]
        assert [(f.user.id, f.remark) for f in theirs] == [(alice, "A")]
        assert await self.database.read(c.pending_requests, bob) == ([], [])
        again = await self.database.write(c.answer, bob, request.id, True, "", now=NOW)
        assert again == (c.NO_SUCH_REQUEST, None)

    async def test_one_pending_request_per_pair(self):
        """A second request while the first is pending names the first; after a decline
        a new one is stored."""
        alice, bob = await self.users("alice", "bob")
        _, first = await self.database.write(c.ask, alice, bob, "", "", now=NOW)
        outcome, earlier = await self.database.write(c.ask, alice, bob, "", "", now=NOW)
        assert (outcome, earlier.id) == (c.REQUEST_PENDING, first.id)
        await self.database.write(c.answer, bob, first.id, False, "", now=NOW)
        outcome, second = await self.database.write(c.ask, alice, bob, "", "", now=NOW)
        assert outcome is None and second.id != first.id

    async def test_only_the_asked_user_can_answer(self):
        """The asker, or a third user, answering is NO_SUCH_REQUEST and changes nothing."""
        alice, bob, carol = await self.users("alice", "bob", "carol")
        _, request = await self.database.write(c.ask, alice, bob, "", "", now=NOW)
        for someone in (alice, carol):
            result = await self.database.write(c.answer, someone, request.id, True, "", now=NOW)
            assert result == (c.NO_SUCH_REQUEST, None)
        assert await self.database.read(c.friend_ids, alice) == []
        incoming, _ = await self.database.read(c.pending_requests, bob)
        assert [r.id for r in incoming] == [request.id]

    async def test_racing_answers_from_two_nodes_accept_once(self):
        """The same accept and a decline sent through two databases (two msg nodes) at
        once: exactly one wins, and the rows agree with the winner."""
        alice, bob = await self.users("alice", "bob")
        other = await self.second_database()
        for round_ in range(5):
            asker = (await self.users(f"asker{round_}"))[0]
            _, request = await self.database.write(c.ask, asker, bob, "", "", now=NOW)
            results = await defer.gatherResults(
                [
                    self.database.write(c.answer, bob, request.id, True, "", now=NOW),
                    other.write(c.answer, bob, request.id, False, "", now=NOW),
                ]
            )
            winners = [r for r in results if r[0] is None]
            assert len(winners) == 1, results
            friends = await self.database.read(c.are_friends, bob, asker)
            assert friends == (winners[0][1].state == c.ACCEPTED)
        assert alice not in await self.database.read(c.friend_ids, bob)

    async def test_undelivered_until_marked(self):
        """Pending requests to a user and answers to their requests stay undelivered
        until marked; an accept closes the accepter's own crossed request as delivered."""
        alice, bob = await self.users("alice", "bob")
        _, to_bob = await self.database.write(c.ask, alice, bob, "", "", now=NOW)
        _, to_alice = await self.database.write(c.ask, bob, alice, "", "", now=NOW)
        requests, answers = await self.database.read(c.undelivered, bob)
        assert ([r.id for r in requests], answers) == ([to_bob.id], [])
        await self.database.write(c.mark_delivered, request_ids=[to_bob.id])
        assert await self.database.read(c.undelivered, bob) == ([], [])
        await self.database.write(c.answer, bob, to_bob.id, True, "", now=NOW)
        requests, answers = await self.database.read(c.undelivered, alice)
        # Bob's crossed request was answered by his accept: no longer a request to her.
        assert requests == [] and to_alice.id != to_bob.id
        assert [r.id for r in answers] == [to_bob.id]
        assert await self.database.read(c.undelivered, bob) == ([], [])
        await self.database.write(c.mark_delivered, answer_ids=[to_bob.id])
        assert (await self.database.read(c.undelivered, alice))[1] == []

    async def test_search_is_case_insensitive_and_literal(self):
        """Search matches any case of name, nick or domain; % and _ are plain characters;
        users who left are not found."""
        ids = await self.users("Alice", "alicia", "a_b", "axb", "gone")
        await self.database.write(
            accounts.set_user_status, ids[4], accounts.USER_STATUS_LEFT, now=NOW
        )
        found = await self.database.read(c.search_users, "ALI", 10)
        assert [u.name for u in found] == ["Alice", "alicia"]
        assert [u.name for u in await self.database.read(c.search_users, "a_", 10)] == ["a_b"]
        assert await self.database.read(c.search_users, "gon", 10) == []
        assert len(await self.database.read(c.search_users, "a", 1)) == 1

    async def test_remove_deletes_both_sides(self):
        alice, bob = await self.users("alice", "bob")
        _, request = await self.database.write(c.ask, alice, bob, "", "", now=NOW)
        await self.database.write(c.answer, bob, request.id, True, "", now=NOW)
        assert await self.database.write(c.remove_friend, bob, alice)
        assert await self.database.read(c.friend_ids, alice) == []
        assert not await self.database.write(c.remove_friend, bob, alice)

    async def second_database(self) -> Any:
        return await self.open_database(backend_url(self.backend), self.data_dir)  # type: ignore[attr-defined]


class SQLiteContactsStoreTests(ContactsStoreTests, SQLiteStoreCase):
    pass


class MariaDBContactsStoreTests(ContactsStoreTests, MariaDBStoreCase):
    pass
