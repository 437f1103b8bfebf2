"""The running server as the admin API sees and changes it (``directory.Live``).

It reaches the services hosted in this process: the msg service (its connections, its
session watch, its group notifications) and the route service (the presence of every
linked msg node, and relaying to them). Hosted beside msg (the default), changes reach
this node's clients at once and the other nodes' through route; hosted on a cluster's
center (with route, without msg), the session list covers every node and notifications
are relayed to all of them, while the other nodes end sessions at their next
``msg.account_check_interval``.

What this node cannot know is said as ``null``: another node's connection time and
address (route learns only who is connected where, with which client type).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from teamtalk_py import __version__
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Group_pb2, Server_pb2
from teamtalk_py.store import groups as group_store
from teamtalk_py.wire.protocol import encode


def client_type_name(client_type: int) -> str:
    from teamtalk_py.msg.service import client_type_name as name

    return name(client_type)


def session_id(user_id: int, client_type: int) -> str:
    """A session's id in the API: TeamTalk keeps one connection per user and client
    type, so the pair names it across the cluster."""
    return f"{user_id}-{client_type}"


class ServerLive:
    """``directory.Live`` over the services of one ``ServiceCollection``: the co-hosted
    msg, route and login services (None where not hosted) are handed in."""

    def __init__(self, collection: Any, msg: Any = None, route: Any = None, login: Any = None):
        self.collection = collection
        self.msg = msg
        self.route = route
        self.login = login

    # -- changes -----------------------------------------------------------------------

    def sessions_changed(self) -> None:
        msg = self.msg
        if msg is not None and msg.is_started:
            msg.session_watch.check()

    def group_changed(self, change: group_store.MemberChange) -> None:
        msg = self.msg
        if msg is not None and msg.is_started:
            msg.groups.forget(change.group_id)
            msg.groups.notify_change(change, 0)
            return
        route = self.route
        if route is not None and route.is_started:
            notify = encode(
                B.CID_GROUP_CHANGE_MEMBER_NOTIFY,
                Group_pb2.IMGroupChangeMemberNotify(
                    user_id=0,
                    change_type=B.GroupModifyType.ValueType(change.change_type),
                    group_id=change.group_id,
                    cur_user_id_list=change.current,
                    chg_user_id_list=change.changed,
                ),
            )
            route.hub.relay(None, notify, None)

    def kick(self, user_id: int, client_type: int) -> bool:
        """False when no such session is known. A msg node whose route service runs in
        another process cannot see the other nodes' sessions: it sends the kick on."""
        known = any(
            s["user_id"] == user_id and s["client_type_id"] == client_type for s in self.sessions()
        )
        msg = self.msg
        route_elsewhere = msg is not None and self.route is None
        if not known and not route_elsewhere:
            return False
        reason = B.KICK_REASON_DUPLICATE_USER
        if msg is not None and msg.is_started:
            from teamtalk_py.msg.session import kick_duplicate

            kick_duplicate(msg, user_id, client_type, reason)
            msg.route.kick(user_id, client_type, reason)
            return True
        route = self.route
        if route is not None:
            kick = Server_pb2.IMServerKickUser(
                user_id=user_id, client_type=B.ClientType.ValueType(client_type), reason=reason
            )
            route.hub.relay(None, encode(B.CID_OTHER_SERVER_KICK_USER, kick), [user_id])
        return True

    # -- what is running ---------------------------------------------------------------

    def sessions(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        msg = self.msg
        if msg is not None and msg.is_started:
            node = msg.node_name()
            for conn in msg.online.all_connections():
                result.append(
                    {
                        "id": session_id(conn.user_id, conn.client_type),
                        "user_id": conn.user_id,
                        "user_name": getattr(conn, "login_name", ""),
                        "client_type": client_type_name(conn.client_type),
                        "client_type_id": conn.client_type,
                        "node": node,
                        "since": int(getattr(conn, "logged_in_at", 0)) or None,
                        "address": getattr(conn, "peer", "") or None,
                    }
                )
        route = self.route
        if route is not None and route.is_started:
            for link in route.hub.links:
                peer = getattr(link, "peer", None)
                if peer is None:
                    continue  # the co-hosted msg service, listed above
                for user_id, client_type in route.hub.presence.connections_on(link):
                    result.append(
                        {
                            "id": session_id(user_id, client_type),
                            "user_id": user_id,
                            "user_name": None,
                            "client_type": client_type_name(client_type),
                            "client_type_id": client_type,
                            "node": f"msg node linked from {peer}",
                            "since": None,
                            "address": None,
                        }
                    )
        return result

    async def nodes(self) -> list[dict[str, Any]]:
        """This process's services, then the msg nodes other processes run (as login
        and route know them)."""
        nodes: list[dict[str, Any]] = []
        collection = self.collection
        for child in collection:
            name = getattr(child, "name", "")
            if name not in ("msg", "route", "file", "login", "media", "disk", "admin"):
                continue
            health = await defer.ensureDeferred(child.health())
            entry: dict[str, Any] = {
                "service": name,
                "node": self._node_name(child),
                "local": True,
                "state": "up" if health.get("ok") else "down",
                "version": __version__,
                "load": self._load(child),
                "links": dict(health.get("links", {})),
            }
            if health.get("degraded"):
                entry["state"] = "degraded"
            nodes.append(entry)
        login = self.login
        msg = self.msg
        if login is not None:
            for key, node in login.nodes.items():
                if msg is not None and key is msg:
                    continue
                nodes.append(
                    {
                        "service": "msg",
                        "node": f"{node.ip1}:{node.port}",
                        "local": False,
                        "state": "up",
                        "version": None,
                        "load": {"connections": node.load(), "max_connections": node.max_conn_cnt},
                        "links": {"login": "up"},
                    }
                )
        return nodes

    def _node_name(self, child: Any) -> str:
        advertise = self.collection.config.server.advertise
        try:
            port = child.bound_port()
        except (IndexError, AssertionError, AttributeError):
            return advertise
        return f"{advertise}:{port}"

    def _load(self, child: Any) -> dict[str, Any]:
        if child.name == "msg" and child.is_started:
            return {
                "connections": sum(1 for _ in child.online.all_connections()),
                "max_connections": child.config.msg.max_connections,
            }
        if child.name == "route" and child.is_started:
            return {"linked_nodes": len(child.hub.links)}
        if child.name == "login":
            return {"msg_nodes": len(child.nodes)}
        return {}
