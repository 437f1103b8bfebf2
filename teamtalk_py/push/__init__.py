"""Offline push: the decision after a message is stored, a durable queue and the senders
(APNs, FCM, TeamTalk's push_server). ``service.PushService`` wires them for one node."""
