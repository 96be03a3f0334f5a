"""Run the simulated grasp cell: MuJoCo FR3 served over the libfranka protocol, plus its camera service.

python -m appliance.sim --config firmware_config/sim.yaml
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")

from appliance.config import ConfigError, load_config  # noqa: E402

from .cell import SimCell, SimCellConfig  # noqa: E402
from .service import CellService  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.sim",
        description="Start the simulated cell: franky-sim's FR3 on loopback (drive it with pylibfranka "
        "from another process), the table, objects, and a ZeroMQ service for camera frames, resets and poses.",
        epilog="example: python -m appliance.sim --config firmware_config/sim.yaml",
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML file with a 'sim' section")
    parser.add_argument(
        "--parent",
        type=int,
        metavar="PID",
        help="stop when process PID, the one that started the cell, ends however it ends (even killed with "
        "SIGKILL): a benchmark or demo that dies leaves no cell running",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config, "sim", SimCellConfig)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.parent is not None:
        threading.Thread(target=watch_parent, args=(args.parent, stop), daemon=True).start()
    with SimCell(config) as cell:
        service = CellService(cell).start()
        print(f"sim cell ready: robot {cell.robot.hostname}, service {service.endpoint}", flush=True)
        stop.wait()
        service.stop()
    return 0


def watch_parent(pid: int, stop: threading.Event, every_s: float = 0.5) -> None:
    """Set ``stop`` once this process's parent is no longer ``pid`` (it ended and the cell was handed to init)."""
    while not stop.wait(every_s):
        if os.getppid() != pid:
            print(f"sim cell: process {pid} that started it has ended; stopping", file=sys.stderr, flush=True)
            stop.set()


if __name__ == "__main__":
    sys.exit(main())
