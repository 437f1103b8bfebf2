"""teamtalk_py: a TeamTalk-compatible IM server on Twisted."""
