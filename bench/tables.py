"""Markdown building blocks shared by the renderers: pure functions of values."""

from __future__ import annotations

from typing import Any

Row = list[str]


def table(header: Row, rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(a: Any, b: Any) -> str:
    try:
        return f"{a / b:.2f}×"
    except (TypeError, ZeroDivisionError):
        return "–"


def get(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def config_text(config: dict[str, Any] | None, label: str = "") -> str:
    """The configuration a table was measured on, one line (printed above every table)."""
    prefix = f"{label}: " if label else ""
    if not config:
        return f"{prefix}configuration not recorded"
    parts = [f"**{config.get('mode', '?')}**", f"{config.get('nodes', '?')} nodes"]
    parts.append(f"auth {config.get('auth', '?')}")
    if "raft_password" in config:
        parts.append("Raft password" if config["raft_password"] else "no Raft password")
    parts.append(f"journal {config.get('journal', '?')}")
    if config.get("args"):
        parts.append("`" + " ".join(config["args"]) + "`")
    return prefix + ", ".join(parts)


def config_block(configs: list[tuple[str, dict[str, Any] | None]]) -> str:
    """'Configuration: …' above a table; one bullet per system when a table mixes several."""
    if len(configs) == 1:
        return f"Configuration: {config_text(configs[0][1])}.\n\n"
    lines = [f"- {config_text(c, label)}" for label, c in configs]
    return "Configurations:\n" + "\n".join(lines) + "\n\n"
