"""The facet's files, so they survive a restart (spec §5.1, §5.7, §6.2).

- ``System_ClientFailover.json``: the one ClientFailover configuration;
- ``System_FailoverState.json``: the failover state (spec §5.7), saved on every role or score
  change, ``AdapterState`` Running while up and Shutdown after a graceful stop;
- ``System_HealthEndpoints.json``: the OMF endpoints failover health goes to;
- ``System_FailoverSession.json``: the session id.

The file is ``System_ClientFailover.json`` (the adapter framework's ``<ComponentId>_<facet>.json``
naming), holding the seed's own form: an array of one configuration, or no file at all. Secrets
are stored in clear, like the health endpoints in the cluster's journal, in a file only its
owner can read (mode 0600). Writes are atomic (temporary file, fsync, rename, fsync of the
directory) so a crash leaves the old or the new configuration, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cfs_cluster.errors import BadRequest, CfsError
from cfs_cluster.facet.model import ClientFailoverConfig, parse_config, single_entry

__all__ = ["CONFIG_FILE", "HEALTH_FILE", "SESSION_FILE", "STATE_FILE", "ConfigStore"]

CONFIG_FILE = "System_ClientFailover.json"
SESSION_FILE = "System_FailoverSession.json"
STATE_FILE = "System_FailoverState.json"
HEALTH_FILE = "System_HealthEndpoints.json"


class ConfigStore:
    """Reads and atomically writes the configuration (and the session id) in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / CONFIG_FILE

    def load(self) -> ClientFailoverConfig | None:
        """The stored configuration, None if there is none; a damaged file is an error."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CfsError(f"Cannot read {self.path}: {exc}") from exc
        try:
            body = json.loads(text)
            return None if body == [] else parse_config(single_entry(body))
        except (ValueError, BadRequest) as exc:
            reason = exc.reason if isinstance(exc, BadRequest) else str(exc)
            # Refuse to start rather than silently run without failover.
            raise CfsError(
                f"The stored configuration {self.path} is damaged: {reason}",
                resolution="Fix or delete the file, then start again.",
            ) from exc

    def save(self, config: ClientFailoverConfig | None) -> None:
        """Replace the stored configuration; None deletes it."""
        try:
            if config is None:
                self.path.unlink(missing_ok=True)
                return
            self._write(self.path, [config.to_json(masked=False)])
        except OSError as exc:
            raise CfsError(f"Cannot save the configuration to {self.path}: {exc}") from exc

    def load_state(self) -> dict[str, Any] | None:
        """The saved failover state, None if there is none or it cannot be read.

        An unreadable state is not fatal: the adapter then starts as after an ungraceful stop
        (Secondary), which is always safe.
        """
        try:
            body = json.loads((self.directory / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def save_state(self, state: dict[str, Any] | None) -> None:
        """Replace the saved failover state; None deletes it (failover switched off)."""
        path = self.directory / STATE_FILE
        try:
            if state is None:
                path.unlink(missing_ok=True)
            else:
                self._write(path, state)
        except OSError as exc:
            raise CfsError(f"Cannot save the failover state to {path}: {exc}") from exc

    def load_health(self) -> Any:
        """The stored health endpoints document (an array), [] when there is none."""
        path = self.directory / HEALTH_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise CfsError(
                f"The stored health endpoints {path} are damaged: {exc}",
                resolution="Fix or delete the file, then start again.",
            ) from exc

    def save_health(self, document: list[dict[str, Any]]) -> None:
        path = self.directory / HEALTH_FILE
        try:
            if document:
                self._write(path, document)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise CfsError(f"Cannot save the health endpoints to {path}: {exc}") from exc

    def session_id(self, generate: str) -> str:
        """The adapter's session id: the stored one, else ``generate`` (stored from now on).

        A real adapter's session id is stable across restarts; keeping it means a restarted
        adapter takes its old session back instead of leaving a stale one in the group.
        """
        path = self.directory / SESSION_FILE
        try:
            stored = json.loads(path.read_text(encoding="utf-8")).get("SessionId")
            if isinstance(stored, str) and stored:
                return stored
        except (OSError, ValueError, AttributeError):
            pass  # missing or unreadable: start a new identity
        try:
            self._write(path, {"SessionId": generate})
        except OSError as exc:
            raise CfsError(f"Cannot save the session id to {path}: {exc}") from exc
        return generate

    def _write(self, path: Path, document: object) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps(document, indent=2).encode("utf-8")
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:  # mkstemp creates it 0600
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        _fsync_directory(self.directory)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); not possible on every platform."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
