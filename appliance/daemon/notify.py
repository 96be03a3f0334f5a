"""systemd's notify protocol (Type=notify): READY, STATUS, WATCHDOG, STOPPING over a unix datagram.

No dependency: the protocol is one datagram of ``KEY=value`` lines to the
socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` is the abstract
namespace). Without that variable every call is a no-op, so the daemon runs
the same under systemd, in a terminal and in tests.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to systemd when it is listening."""

    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self.address = ("\0" + address[1:] if address and address.startswith("@") else address) or None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if self.address else None
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_s = int(usec) / 1e6 if usec and usec.isdigit() else None
        """The watchdog period systemd expects pings within (None: no watchdog)."""

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def check_heartbeat(self, heartbeat_s: float) -> None:
        """``ValueError`` unless the daemon's heartbeat pings well within the unit's ``WatchdogSec`` (at most half of
        it, as sd_watchdog_enabled(3) advises): a slower heartbeat would have systemd kill a healthy daemon."""
        if self.watchdog_s is not None and heartbeat_s > self.watchdog_s / 2:
            raise ValueError(
                f"server.heartbeat_s is {heartbeat_s} s, more than half of the unit's WatchdogSec "
                f"({self.watchdog_s:g} s): systemd would kill a healthy daemon"
            )

    def send(self, **fields) -> bool:
        """Send ``KEY=value`` lines (keys upper-cased); False when not under systemd or on failure."""
        if self._sock is None:
            return False
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items())
        try:
            self._sock.sendto(message.encode(), self.address)
            return True
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send(ready=1, status=status) if status else self.send(ready=1)

    def status(self, text: str) -> bool:
        return self.send(status=text)

    def watchdog(self) -> bool:
        return self.send(watchdog=1)

    def stopping(self) -> bool:
        return self.send(stopping=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
