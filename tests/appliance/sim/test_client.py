"""The sim cell's client against a real socket that never answers: it gives up when its watch says the cell is gone."""

import time

import pytest

zmq = pytest.importorskip("zmq")

from appliance.sim.client import CellUnavailable, SimCellClient  # noqa: E402


class Gone(Exception):
    pass


@pytest.fixture
def silent_cell():
    """A bound REP socket that takes requests and never replies, like a cell killed mid-request."""
    context = zmq.Context.instance()
    socket = context.socket(zmq.REP)
    socket.linger = 0
    port = socket.bind_to_random_port("tcp://127.0.0.1")
    yield f"tcp://127.0.0.1:{port}"
    socket.close(0)


def test_a_watch_that_raises_ends_the_wait_at_once(silent_cell):
    calls = []

    def watch():
        calls.append(time.monotonic())
        if len(calls) >= 2:
            raise Gone("the sim cell exited")

    start = time.monotonic()
    with SimCellClient(silent_cell, timeout_s=10, retries=3, watch=watch) as client, pytest.raises(Gone):
        client.info()
    assert time.monotonic() - start < 3  # not the 30 s that three 10 s tries take


def test_without_a_watch_every_try_times_out(silent_cell):
    start = time.monotonic()
    with (
        SimCellClient(silent_cell, timeout_s=0.3, retries=2) as client,
        pytest.raises(CellUnavailable, match="2 tries"),
    ):
        client.info()
    assert time.monotonic() - start >= 0.5  # two 0.3 s waits (zmq may wake a hair early)
