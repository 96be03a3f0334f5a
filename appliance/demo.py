"""The whole appliance on one machine: the sim cell, the daemon with a bundle, and three instructions.

    python -m appliance.demo                         # the bundled models/rtgrasp-tiny
    python -m appliance.demo --bundle runs/my-bundle --out runs/demo

It starts the simulated cell (MuJoCo FR3 served over the libfranka protocol, and its top-down
camera) and the daemon as their own processes, exactly as on a robot, then sends:

1. a typed instruction, which the daemon answers with reasoning + pose and executes;
2. a refinement of that answer in the same conversation, executed on the same scene;
3. a spoken instruction: a WAV made with espeak-ng, transcribed on the daemon with pocketsphinx.

For each it prints the reasoning, the pose and whether the object was lifted, and writes the
annotated picture (what the model saw, its grasp drawn in) and the camera's view after the lift
as PNGs under ``--out``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .client import Client, DaemonUnavailable, show
from .runtime.proc import describe_exit, tail

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "firmware_config"
DEFAULT_BUNDLE = ROOT / "models" / "rtgrasp-tiny"
DAEMON_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Step:
    """One instruction of the demo: what is on the table, and what is said."""

    name: str
    object: str
    text: str
    kind: str = "grasp"  # grasp | refine | spoken


STEPS = (
    Step("1-typed", "mug", "pick up the mug"),
    Step("2-refined", "mug", "rotate the gripper by 90 degrees", kind="refine"),
    Step("3-spoken", "ball", "pick up the ball", kind="spoken"),
)


def write_configs(out: Path, bundle: Path, categories: list[str], sockets: Path) -> tuple[Path, Path, dict]:
    """The cell's and the daemon's YAML, from firmware_config/'s sim files, with ``ipc://`` endpoints in ``sockets``
    (nothing to collide with whatever else runs on this machine)."""
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    service = f"ipc://{sockets}/cell"
    sim = yaml.safe_load((CONFIGS / "sim.yaml").read_text())
    sim["sim"].update(categories=categories, service=service, robot_host=host)
    sim_path = out / "sim.yaml"
    sim_path.write_text(yaml.safe_dump(sim))
    robot = yaml.safe_load((CONFIGS / "franka-sim.yaml").read_text())
    robot["arm"]["host"] = host
    daemon = yaml.safe_load((CONFIGS / "appliance-sim.yaml").read_text())
    daemon["server"].update(requests=f"ipc://{sockets}/requests", events=f"ipc://{sockets}/events")
    daemon["model"]["bundle"] = str(bundle.resolve())
    daemon.update(
        camera={"type": "sim", "endpoint": service, "timeout_s": 10.0},
        robot=robot,
        handeye=str(CONFIGS / "handeye-sim.yaml"),
        journal=str((out / "journal.sqlite").resolve()),
    )
    daemon_path = out / "appliance.yaml"
    daemon_path.write_text(yaml.safe_dump(daemon))
    return sim_path, daemon_path, daemon


def speak(text: str, path: Path) -> bytes | None:
    """A 16 kHz mono WAV of ``text`` (espeak-ng + sox), or None when they are not installed."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run(
            ["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path)], check=True, capture_output=True
        )
    return path.read_bytes()


class ProcessDied(RuntimeError):
    """One of the demo's processes (the daemon, the sim cell) has exited."""


@dataclass(frozen=True)
class Watched:
    """A process the demo depends on, and where it writes its log."""

    name: str
    proc: subprocess.Popen
    log: Path

    def check(self) -> None:
        """Raise ``ProcessDied`` with how it ended and its last log lines, if it has exited."""
        if self.proc.poll() is not None:
            raise ProcessDied(
                f"the {self.name} exited with {describe_exit(self.proc.returncode)}; "
                f"the last lines of {self.log}:\n{tail(self.log).rstrip()}"
            )


def watcher(*watched: Watched):
    """A ``Client.watch`` callback: no reply can come once a process it depends on is gone."""

    def check() -> None:
        for w in watched:
            w.check()

    return check


def wait_ready(client: Client, daemon: Watched) -> dict:
    """Poll ``status`` until the daemon answers; fail with its log's tail if it exits first."""
    deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
    while time.monotonic() < deadline:
        daemon.check()
        try:
            reply, _ = client.request("status")
            if reply.get("ok"):
                return reply
        except DaemonUnavailable:
            pass
    raise RuntimeError(f"the daemon did not answer within {DAEMON_START_TIMEOUT_S:.0f} s (log: {daemon.log})")


def save_camera(sim, path: Path) -> None:
    from PIL import Image

    rgb, _ = sim.frame()
    Image.fromarray(rgb).save(path)


def run(bundle: Path, out: Path, seed: int) -> list[dict]:
    from .sim.client import SimCellClient
    from .sim.trials import start_cell, stop_cell

    out.mkdir(parents=True, exist_ok=True)
    categories = sorted({s.object for s in STEPS})
    sockets = Path(tempfile.mkdtemp(prefix="rtgrasp-demo-"))  # short: a unix socket's path must fit 107 bytes
    sim_path, daemon_path, daemon_config = write_configs(out, bundle, categories, sockets)
    print(f"== starting the sim cell ({', '.join(categories)}) and the daemon (bundle {bundle})", flush=True)
    cell = Watched("sim cell", start_cell(sim_path, out / "cell.log"), out / "cell.log")
    daemon_log = out / "daemon.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with daemon_log.open("w") as log_file:
        daemon = Watched(
            "daemon",
            subprocess.Popen(
                [sys.executable, "-m", "appliance", "--config", str(daemon_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            ),
            daemon_log,
        )
    watch = watcher(daemon, cell)
    client = Client(daemon_config["server"]["requests"], timeout_s=2.0, retries=1, watch=watch)
    results = []
    try:
        with SimCellClient(daemon_config["camera"]["endpoint"], timeout_s=10) as sim:
            wait_ready(client, daemon)
            client.close()
            client = Client(daemon_config["server"]["requests"], timeout_s=300.0, retries=1, watch=watch)
            session = None
            for step in STEPS:
                watch()
                placed = sim.reset(
                    f"{step.object}-cell", seed=f"demo:{seed}:{step.object}"
                )  # a refinement sees the same scene again
                print(
                    f"\n== {step.name}: {step.kind} {step.text!r} ({step.object} at x={placed['x']:.3f} m, y={placed['y']:.3f} m)",
                    flush=True,
                )
                audio = None
                fields: dict = {"text": step.text}
                kind = "grasp"
                if step.kind == "refine":
                    kind, fields = "refine", {"text": step.text, "session": session, "execute": True}
                elif step.kind == "spoken":
                    audio = speak(step.text, out / f"{step.name}.wav")
                    if audio is None:
                        print(
                            "   skipped: the spoken instruction needs espeak-ng and sox (scripts/setup appliance,speech installs them)"
                        )
                        continue
                    fields = {}
                reply, extra = client.request(kind, audio, **fields)
                show(reply)
                if reply.get("ok"):
                    session = reply.get("session") or session
                if extra:
                    (out / f"{step.name}.png").write_bytes(extra[0])
                save_camera(sim, out / f"{step.name}-after.png")
                results.append({"step": step.name, "instruction": step.text, "reply": reply})
                client.request("release")
                client.request("home")
    except ProcessDied as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)  # now, before the teardown below
        raise
    finally:
        client.close()
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.proc.wait(20)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()
        stop_cell(cell.proc)
        shutil.rmtree(sockets, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.demo",
        description="Start the sim cell and the daemon, send a typed, a refined and a spoken instruction, "
        "execute the grasps in simulation and write annotated PNGs.",
        epilog="example: python -m appliance.demo --bundle models/rtgrasp-tiny --out runs/demo",
    )
    parser.add_argument(
        "--bundle", type=Path, default=DEFAULT_BUNDLE, help="the model bundle (default: the bundled demo model)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "runs" / "demo", help="where PNGs, WAVs, configs and logs go"
    )
    parser.add_argument("--seed", type=int, default=0, help="where the objects lie")
    args = parser.parse_args(argv)
    if not (args.bundle / "manifest.yaml").is_file():
        print(
            f"error: {args.bundle} is not a bundle (no manifest.yaml); build one with scripts/build_demo_model",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    try:
        results = run(args.bundle, args.out, args.seed)
    except ProcessDied:
        return 1  # said already
    except (RuntimeError, DaemonUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    answered = [r for r in results if r["reply"].get("ok")]
    lifted = [r for r in answered if (r["reply"].get("execution") or {}).get("success")]
    print(f"\n== {len(answered)} of {len(results)} instructions answered, {len(lifted)} objects lifted")
    print(
        f"outputs in {args.out}/: <step>.png (the model's view with its grasp), <step>-after.png (the camera after the grasp), "
        "3-spoken.wav, daemon.log, journal.sqlite, the configs used"
    )
    return 0 if len(answered) == len(results) and results else 1


if __name__ == "__main__":
    sys.exit(main())
