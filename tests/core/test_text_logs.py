"""Text logs for people: time, level, component, and the request id where there is one (milepost.core.logs)."""

from __future__ import annotations

import logging
import re

from milepost.core import logs

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<component>[\w.]+)"
                  r"(?: \[request_id=(?P<request_id>[^\]]+)\])?: (?P<message>.*)$")


def test_text_lines_carry_the_request_id_while_a_request_is_served(capsys) -> None:
    logs.configure("info", "text")
    try:
        log = logging.getLogger("milepost.agent")
        log.info("loaded %s", "churn")
        token = logs.request_id.set("req-42")
        try:
            log.warning("slow batch for %s", "churn")
            try:
                raise ValueError("bad row")
            except ValueError:
                log.exception("scoring failed")
        finally:
            logs.request_id.reset(token)
        log.info("idle")
    finally:
        logs.configure("warning", "text")
    lines = capsys.readouterr().err.splitlines()
    heads = [m.groupdict() for m in map(LINE.match, lines) if m]
    assert [(h["level"], h["component"], h["request_id"], h["message"]) for h in heads] == [
        ("INFO", "milepost.agent", None, "loaded churn"),
        ("WARNING", "milepost.agent", "req-42", "slow batch for churn"),
        ("ERROR", "milepost.agent", "req-42", "scoring failed"),
        ("INFO", "milepost.agent", None, "idle"),
    ]
    assert "ValueError: bad row" in "\n".join(lines)  # the traceback follows its line, as text logs show it


def test_another_handler_sees_the_record_unchanged() -> None:
    record = logging.LogRecord("milepost.coordinator", logging.INFO, __file__, 1, "placed %s", ("dep-1",), None)
    token = logs.request_id.set("req-7")
    try:
        text = logs.TextFormatter().format(record)
    finally:
        logs.request_id.reset(token)
    assert text.endswith("INFO milepost.coordinator [request_id=req-7]: placed dep-1")
    assert not hasattr(record, "request")
