"""Structured logs: one logfmt line per record (time, level, msg, then key=value fields)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

FIELDS = "fields"  # pass extra={"fields": {...}} to add key=value pairs


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        pairs: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        pairs.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            pairs["error"] = self.formatException(record.exc_info)
        return " ".join(f"{key}={_value(value)}" for key, value in pairs.items())


def _value(value: Any) -> str:
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    if text and all(c.isalnum() or c in "-_.:/+@" for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for chatty in ("docker", "urllib3"):  # their debug lines are about HTTP, not dockwall
        logging.getLogger(chatty).setLevel(max(logging.INFO, root.level))
