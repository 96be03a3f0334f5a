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


def wait_until_calling(
    thread_name: str, *places: tuple[str, str], inside: tuple[str, str] | None = None, timeout_s: float = 30.0
) -> None:
    """Wait until the thread called ``thread_name`` of this process is in one of ``places`` — (function, end of its
    file's path) — below ``inside`` (one too) on its stack: how a test knows a call is in flight, without a sleep."""
    import sys
    import threading
    import time

    def on(frame, place) -> bool:
        return frame.f_code.co_name == place[0] and frame.f_code.co_filename.endswith(place[1])

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for thread in threading.enumerate():
            frame = sys._current_frames().get(thread.ident) if thread.name == thread_name else None
            stack = []
            while frame is not None:
                stack.append(frame)
                frame = frame.f_back
            if any(on(f, p) for f in stack for p in places) and (inside is None or any(on(f, inside) for f in stack)):
                return
        time.sleep(0.01)
    raise AssertionError(f"thread {thread_name!r} never reached {places}")


MODEL_CALL = {"inside": ("call", "runtime/worker.py")}
IN_MODEL_CALL = (("_send", "multiprocessing/connection.py"), ("_receive", "runtime/worker.py"))
"""Where a thread waits while the model process has a call of it: sending (a frozen child reads no image) or receiving."""
