"""Push senders behind one small interface (``base.Sender``): APNs, FCM, push_server."""
