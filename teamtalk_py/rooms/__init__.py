"""Chat rooms: the opt-in extension's rooms (docs/EXTENSION.md), after the IM router seed.

A room is an id and, on each msg node, the connections in it; nothing about it is stored.
``membership.NodeRooms`` is one msg node's side (who is in which room here, the fan-out,
dropping slow members); ``directory.RoomDirectory`` is the route service's side (how many
members each node has in each room, the cluster-wide limits, which nodes a post goes to).
Neither knows sockets: members are anything with ``send_raw`` and ``output_backlog``, nodes
anything with ``send_raw``.
"""
