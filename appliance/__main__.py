"""``python -m appliance --config /etc/rtgrasp/appliance.yaml``: the grasp daemon (what systemd runs).

Loads the bundle, connects the camera, starts the arm's process, binds the
ZeroMQ sockets, tells systemd it is ready, and serves until SIGTERM / SIGINT.
Exit status: 0 on a clean stop, 2 for a bad config or bundle, 1 when hardware
(camera, arm) could not be reached.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
from pathlib import Path

log = logging.getLogger("appliance")


def build(config):
    """Model, camera, arm, jobs and daemon from a loaded config (each piece fails with a clear error)."""
    from .camera import make_camera
    from .camera.replay import Recorder
    from .daemon.daemon import Daemon
    from .daemon.jobs import Jobs
    from .daemon.notify import Notifier
    from .daemon.speech import make_transcriber
    from .robot.worker import RobotProcess
    from .runtime.worker import ModelWorker

    m = config.model
    # The model runs in its own process: a native crash there is one failed request, not a dead daemon.
    model = ModelWorker(
        Path(m.bundle),
        m.providers,
        m.llama,
        speculative=m.speculative,
        presence=m.presence_check,
        target_check=m.target_check,
    ).start()
    camera = make_camera(config.camera).connect()
    robot = None
    if config.robot is not None:
        robot = RobotProcess(config.robot.arm, config.robot.poses, config.robot.limits).start()
    recorder = Recorder(Path(config.record)) if config.record else None
    vocabulary = Path(m.bundle) / model.manifest.speech if model.manifest.speech else None
    transcriber = make_transcriber(config.speech, vocabulary) if config.speech.enabled else None
    return Daemon(config, Jobs(config, model, camera, robot, recorder), transcriber, Notifier())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance",
        description="The rtgrasp daemon: camera -> model -> Franka, instructions over ZeroMQ (see docs/protocol.md).",
        epilog="example: python -m appliance --config firmware_config/appliance-sim.yaml",
    )
    parser.add_argument("--config", type=Path, required=True, help="appliance.yaml")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    faulthandler.enable()  # a fatal signal leaves a traceback in the log (journald under systemd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .bundle import BundleError
    from .camera import CameraError
    from .config import ConfigError
    from .daemon.notify import Notifier
    from .daemon.settings import load_appliance_config
    from .robot.worker import RobotUnavailable

    try:
        config = load_appliance_config(args.config)
        Notifier().check_heartbeat(config.server.heartbeat_s)
        daemon = build(config)
    except (ConfigError, BundleError, ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    except (CameraError, RobotUnavailable, OSError, RuntimeError) as exc:
        log.error("%s", exc)
        return 1

    def on_signal(signum, frame):
        log.info("signal %d: shutting down", signum)
        daemon.shutdown.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon.serve()
    finally:
        if daemon.jobs.robot is not None:
            daemon.jobs.robot.close()
        daemon.jobs.model.close()
        daemon.jobs.camera.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
