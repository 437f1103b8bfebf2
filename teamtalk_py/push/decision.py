"""Who gets a push for a stored message, and what it says (commands.md §2.1.14, §2.1.13).

Plain functions of the facts the store gave (``push.store.Facts``), the cluster-wide PC
presence and the local hour, so the reference's rules are testable without a server:

* one-to-one: the receiver; group: every member who had joined before the message and
  has not muted the group (its push shield), never the sender;
* only users with a stored ``ios:``/``android:`` token (here: an iOS or Android client
  type), one job per device;
* iOS tokens of users with the push shield on get nothing during the night
  (22:00-07:59 local time by default: ``push.night_start``/``night_end``);
* ``badge`` (push_count) is the user's total unread count, read after the message was
  stored, so it includes it;
* ``push_type`` 2 (silent: badge only) when a PC client of the user is online anywhere
  in the cluster, else 1 (alert with sound).

The reference decided once per msg node for group messages; we decide once per message,
on the node that stored it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from twisted.logger import Logger

from teamtalk_py.push import text
from teamtalk_py.push.jobs import PUSH_NORMAL, PUSH_SILENT, PushJob, platform_of
from teamtalk_py.push.store import Facts, OutboxRow

log = Logger(namespace="teamtalk.push")


@dataclass(frozen=True)
class Rules:
    aes_key: bytes
    #: platform ("ios"/"android") -> the sender that serves it; absent: not pushed
    senders: Mapping[str, str]
    night_start: int = 22
    night_end: int = 8

    def is_night(self, hour: int) -> bool:
        if self.night_start <= self.night_end:
            return self.night_start <= hour < self.night_end
        return hour >= self.night_start or hour < self.night_end


def collapse_id(row: OutboxRow) -> str:
    """The receiver's conversation: the sender for one-to-one messages, else the group."""
    session = row.to_id if row.is_group else row.from_id
    return f"tt-{row.session_type}-{session}"


def decide(
    row: OutboxRow, facts: Facts, pc_online: Collection[int], hour: int, rules: Rules
) -> list[PushJob]:
    """The jobs for one stored message (empty when nobody is to be pushed)."""
    jobs: list[PushJob] = []
    flash: str | None = None
    for user_id in facts.targets.get(row.id, ()):
        if user_id == row.from_id:
            continue
        token = facts.tokens.get(user_id)
        if token is None or not token.token:
            continue
        platform = platform_of(token.client_type)
        sender = rules.senders.get(platform) if platform else None
        if platform is None or sender is None:
            continue
        if platform == "ios" and token.push_shield == 1 and rules.is_night(hour):
            continue
        if flash is None:
            try:
                flash = text.flash(row.msg_type, row.content, facts.names.get(row.from_id),
                                   rules.aes_key)  # fmt: skip
            except text.UndecryptableText as e:
                log.info(
                    "no push for message {msg_id} from {from_id}: text does not decrypt ({why})",
                    msg_id=row.msg_id,
                    from_id=row.from_id,
                    why=str(e),
                )
                return []
        jobs.append(
            PushJob(
                key=f"{row.session_type}.{row.from_id}.{row.to_id}.{row.msg_id}.{user_id}",
                sender=sender,
                platform=platform,
                token=token.token,
                user_id=user_id,
                flash=flash,
                data=text.custom_data(row.msg_type, row.from_id, row.to_id),
                badge=facts.unread.get(user_id, 0),
                push_type=PUSH_SILENT if user_id in pc_online else PUSH_NORMAL,
                collapse_id=collapse_id(row),
                created=float(row.created),
            )
        )
    return jobs
