"""TeamTalk wire protocol: the PDU header and the command-id -> message registry."""
