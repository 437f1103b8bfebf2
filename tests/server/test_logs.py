"""Log output: JSON lines that ``json.loads`` reads, the run-time level, the process's
``--log-format json``."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel, LogPublisher

from teamtalk_py import logs
from teamtalk_py.outage import log_failure
from teamtalk_py.store.txn import StoreStoppingError
from tests.server.test_process import START_TIMEOUT, private_listeners, run_twistd, with_listener
from tests.support import TestCase


class JsonLinesTests(TestCase):
    def setUp(self) -> None:
        self.addCleanup(logs.set_level, "info")
        self.out = io.StringIO()
        publisher = LogPublisher(logs.observer("json", self.out))
        self.log = Logger(namespace="teamtalk.test", observer=publisher)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]

    def test_each_event_is_one_json_object_with_the_message_rendered(self):
        """No record separator, the template filled in, the fields kept, and a name with
        a newline stays inside its line."""
        self.log.info("login refused: {name} from {peer}", name="eve\nforged", peer="10.0.0.9:5")
        (record,) = self.lines()
        assert not self.out.getvalue().startswith("\x1e")
        assert record["message"] == "login refused: eve\nforged from 10.0.0.9:5"
        assert record["name"] == "eve\nforged" and record["peer"] == "10.0.0.9:5"
        assert record["level"] == "info" and record["namespace"] == "teamtalk.test"
        assert record["time"].endswith("+00:00")

    def test_a_logged_failure_carries_its_traceback(self):
        """log.failure keeps the traceback as a field of the same line."""
        try:
            raise ZeroDivisionError("boom")
        except ZeroDivisionError:
            self.log.failure("it broke for {user_id}", user_id=7)
        (record,) = self.lines()
        assert record["level"] == "critical" and record["user_id"] == 7
        assert "ZeroDivisionError" in record["traceback"]

    def test_work_cut_short_by_a_stopping_store_is_one_info_line(self):
        """``log_failure`` of a job the store refused while stopping: the server shutting
        down, said in one info line without a traceback; any other failure keeps its
        traceback at critical."""
        for error in (StoreStoppingError("database is stopping"), ZeroDivisionError("boom")):
            try:
                raise error
            except Exception:
                log_failure(self.log, "delivering to {user_id} failed", user_id=2)
        stopping, broken = self.lines()
        assert stopping["level"] == "info" and "traceback" not in stopping
        assert stopping["message"] == "delivering to 2 failed: database is stopping"
        assert broken["level"] == "critical" and "ZeroDivisionError" in broken["traceback"]

    def test_the_level_filters_and_changes_at_run_time(self):
        """Below the level nothing is written; set_level (SIGHUP) changes it."""
        self.log.debug("hidden")
        logs.set_level("debug")
        self.log.debug("shown")
        logs.set_level("error")
        self.log.warn("hidden too")
        self.log.emit(LogLevel.error, "error shown")
        assert [r["message"] for r in self.lines()] == ["shown", "error shown"]


class ProcessLogTests(TestCase):
    def test_log_format_json_makes_every_line_of_a_real_process_json(self):
        """twistd teamtalk --log-format json: every stdout line parses, Twisted's own
        lines included; the start-up failure line is plain text on stderr."""
        tmp = self.tmp_path()
        listeners = private_listeners()
        msg_endpoint = listeners[listeners.index("--msg-listen") + 1]
        # The HTTP listener asks for the msg listener's port: one of them cannot bind.
        listeners = with_listener(listeners, "--http-listen", msg_endpoint)
        proc = run_twistd(tmp, *listeners, "--log-format", "json")
        assert proc.wait(timeout=START_TIMEOUT) == 1
        out = proc.output()
        lines = out.strip().splitlines()
        records = [json.loads(line) for line in lines[:-1]]
        assert any(r["message"].startswith("twistd ") for r in records)
        assert any(
            r["level"] == "critical" and "Address already in use" in r["message"] for r in records
        )
        assert lines[-1].startswith("twistd teamtalk: cannot start")
