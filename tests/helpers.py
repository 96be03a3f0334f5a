"""Helpers shared across the test packages: endpoints of our own, a sim cell on its own loopback address."""

import itertools
import random
import tempfile
from contextlib import contextmanager

_SOCKETS = tempfile.mkdtemp(prefix="rtg-")  # short: a unix socket's path must fit 107 bytes
_NEXT = itertools.count()


def endpoint(name: str = "s") -> str:
    """A fresh ``ipc://`` endpoint no other test uses: nothing to race for, unlike "find a free port, bind it later"."""
    return f"ipc://{_SOCKETS}/{name}-{next(_NEXT)}"


def wait_subscribed(sub, timeout_s: float = 30.0) -> None:
    """Wait until a SUB socket connected to the daemon receives its heartbeat: the subscription is then live (a PUB
    socket drops what it publishes before that). ``sub`` must subscribe to ``heartbeat`` too."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sub.poll(int(1000 * (deadline - time.monotonic()))) and sub.recv_multipart()[0] == b"heartbeat":
            return
    raise AssertionError("no heartbeat from the daemon: the subscription never went live")


@contextmanager
def sim_cell(directory, categories: str = "box"):
    """A running sim cell (franky-sim + camera service) on a random loopback address; yields its config."""
    from appliance.config import load_config
    from appliance.sim.cell import SimCellConfig
    from appliance.sim.trials import start_cell, stop_cell

    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    path = directory / "sim.yaml"
    path.write_text(f"sim:\n  categories: [{categories}]\n  service: {endpoint('cell')}\n  robot_host: {host}\n")
    proc = start_cell(path)
    try:
        yield load_config(path, "sim", SimCellConfig)
    finally:
        stop_cell(proc)
