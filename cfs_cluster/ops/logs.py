"""Log setup: the commercial service's line style, or JSON lines for log shippers (spec §7)."""

from __future__ import annotations

import itertools
import json
import logging
import time

__all__ = ["LEVELS", "current_level", "set_level", "setup_logging"]

# CFS level names (spec §7) -> Python levels; Verbose sits below Debug.
VERBOSE = 5
LEVELS = {
    "verbose": VERBOSE,
    "debug": logging.DEBUG,
    "information": logging.INFO,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
}
_SHORT = {VERBOSE: "VRB", 10: "DBG", 20: "INF", 30: "WRN", 40: "ERR", 50: "FTL"}


class CommercialFormatter(logging.Formatter):
    """``[HH:MM:SS:mmm INF source:seq] message`` as the commercial service writes it."""

    def __init__(self) -> None:
        super().__init__()
        self._seq = itertools.count(1)

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        millis = int(record.msecs)
        level = _SHORT.get(record.levelno, record.levelname[:3])
        text = f"[{stamp}:{millis:03d} {level} {record.name}:{next(self._seq):08X}] {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": record.created,
            "level": _SHORT.get(record.levelno, record.levelname),
            "source": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "information", fmt: str = "text") -> None:
    logging.addLevelName(VERBOSE, "VERBOSE")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else CommercialFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    # pysyncobj logs 'truncating already-applied' at CRITICAL under pipelined load: benign
    # (the leader re-sends overlapping entries), alarming to operators. Keep its errors only
    # when the operator asks for Debug.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    _tune_pysyncobj(root.level)


def _tune_pysyncobj(level: int) -> None:
    logging.getLogger("pysyncobj").setLevel(logging.DEBUG if level <= logging.DEBUG else 100)


_NAMES = {
    VERBOSE: "Verbose",
    10: "Debug",
    20: "Information",
    30: "Warning",
    40: "Error",
    50: "Fatal",
}


def set_level(level: str) -> bool:
    """Switch this process's level at runtime (the replicated LogLevel); True if it changed."""
    root = logging.getLogger()
    new = LEVELS.get(level.lower(), logging.INFO)
    if root.level == new:
        return False
    root.setLevel(new)
    _tune_pysyncobj(new)
    return True


def current_level() -> str:
    """The effective level of this process as a CFS level name (spec §7)."""
    return _NAMES.get(logging.getLogger().level, logging.getLevelName(logging.getLogger().level))
