"""The JSON log lines: one object per line, extras kept, uvicorn's terminal colours left out."""

from __future__ import annotations

import json
import logging

from service.logs import JsonFormatter


def test_uvicorn_color_message_is_not_written():
    # what uvicorn logs at start-up: the message, and the same with ANSI colours as the extra color_message
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1,
                               "Uvicorn running on %s (Press CTRL+C to quit)", ("http://127.0.0.1:8000",), None)
    record.color_message = "Uvicorn running on \x1b[1m%s\x1b[0m (Press CTRL+C to quit)"
    record.request_id = "req-1"
    text = JsonFormatter().format(record)
    assert "\x1b" not in text and "\\u001b" not in text and "color_message" not in text
    line = json.loads(text)
    assert line["message"] == "Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)"
    assert line["request_id"] == "req-1" and line["level"] == "info" and line["logger"] == "uvicorn.error"
