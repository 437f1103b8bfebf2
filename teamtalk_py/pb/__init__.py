"""Generated protobuf code for the TeamTalk wire protocol (see ``scripts/genproto.py``)."""
