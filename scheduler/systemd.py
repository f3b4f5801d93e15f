"""systemd's notify protocol: ``READY=1`` once the model is loaded, ``WATCHDOG=1`` while the process is healthy.

The protocol is one datagram of ``KEY=VALUE`` lines to the Unix socket named by ``$NOTIFY_SOCKET`` (a leading ``@``
names an abstract socket). Without that variable (no systemd, a container) everything here does nothing. These
few lines stand in for a library on purpose: ``sdnotify`` on PyPI is unmaintained, and ``systemd-python`` needs a
C toolchain and libsystemd headers to install.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

from scheduler.runner import JobResult, JobSkipped

if TYPE_CHECKING:
    from bot.app import Application

logger = logging.getLogger(__name__)


def notify(*states: str) -> bool:
    """Send ``states`` (``READY=1``, ``STOPPING=1``, ``WATCHDOG=1``, ``STATUS=…``) to systemd; False without it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or not states:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # called on the event loop: a full socket drops the message instead
            sock.connect(address)
            sock.send("\n".join(states).encode())
    except OSError as exc:
        logger.warning("could not notify systemd (%s): %s", states[0], exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of systemd's ``WatchdogSec`` (``$WATCHDOG_USEC``) when it watches this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class SystemdWatchdog:
    """Tells systemd the process is alive (``WATCHDOG=1``) while its event loop turns and it is healthy.

    Once the application gave up on a hung model worker it stops: the process is then draining towards its own
    exit, and ``WatchdogSec`` only ends it should that exit stall. A blocked event loop stops it too.
    """

    def __init__(self, app: Application) -> None:
        self._app = app
        self.sent = 0

    async def run(self) -> JobResult:
        if self._app.unhealthy is not None:
            raise JobSkipped(f"not healthy: {self._app.unhealthy}")
        if not notify("WATCHDOG=1"):
            raise JobSkipped("systemd's notify socket is not reachable")
        self.sent += 1
        return JobResult("told systemd's watchdog the process is alive")
