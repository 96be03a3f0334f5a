"""Helpers shared across the test packages: free ports and a sim cell on its own loopback address."""

import random
import socket
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def sim_cell(directory, categories: str = "box"):
    """A running sim cell (franky-sim + camera service) on a random loopback address; yields its config."""
    from appliance.config import load_config
    from appliance.sim.cell import SimCellConfig
    from appliance.sim.trials import start_cell, stop_cell

    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    path = directory / "sim.yaml"
    path.write_text(
        f"sim:\n  categories: [{categories}]\n  service: tcp://127.0.0.1:{free_port()}\n  robot_host: {host}\n"
    )
    proc = start_cell(path)
    try:
        yield load_config(path, "sim", SimCellConfig)
    finally:
        stop_cell(proc)
