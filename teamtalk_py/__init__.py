"""teamtalk_py: a TeamTalk-compatible IM server on Twisted."""

__version__ = "0.1.0"
