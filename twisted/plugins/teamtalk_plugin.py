"""Registers ``twistd teamtalk``; everything else lives in ``teamtalk_py.tap``."""

from twisted.application.service import ServiceMaker

teamtalk = ServiceMaker(
    "teamtalk",
    "teamtalk_py.tap",
    "A TeamTalk-compatible IM server (msg, route, file and login services).",
    "teamtalk",
)
