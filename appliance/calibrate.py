"""Hand-eye calibration of a fixed camera (eye-to-hand): ``T_base_cam`` from robot poses and marker observations.

    python -m appliance.calibrate --observations calib.yaml --out firmware_config/handeye.yaml

A marker (ArUco board, checkerboard) is fixed to the flange; for N ≥ 3 arm
poses, ``calib.yaml`` lists the flange pose in the base frame (``O_T_EE``, as
the robot reports it, row-major 4×4) and the marker pose in the camera frame
(from the camera's detector, e.g. ``cv2.solvePnP``)::

    observations:
      - {T_base_ee: [[...4 rows...]], T_cam_marker: [[...]]}

For a camera that does not move, the flange-to-base motions and the
marker-to-camera motions satisfy the hand-eye equation with the *base* in the
role of the gripper, so OpenCV's ``calibrateHandEye`` on the inverted robot
poses returns ``T_cam_base``'s inverse, ``T_base_cam``. The residual is how far
the marker's implied pose in the flange frame scatters over the observations.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from .geometry import invert

METHODS = ("TSAI", "PARK", "HORAUD", "ANDREFF", "DANIILIDIS")


class CalibrationError(ValueError):
    """Observations that cannot give a calibration."""


def _split(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return T[:3, :3], T[:3, 3].reshape(3, 1)


def solve(
    T_base_ee: list[np.ndarray], T_cam_marker: list[np.ndarray], method: str = "PARK"
) -> tuple[np.ndarray, float]:
    """(T_base_cam, residual in millimetres) from paired observations."""
    import cv2

    if len(T_base_ee) != len(T_cam_marker) or len(T_base_ee) < 3:
        raise CalibrationError(f"need at least 3 paired observations, got {len(T_base_ee)} and {len(T_cam_marker)}")
    if method not in METHODS:
        raise CalibrationError(f"method must be one of {METHODS}")
    ee_base = [_split(invert(T)) for T in T_base_ee]  # eye-to-hand: the base takes the gripper's role
    cam_marker = [_split(T) for T in T_cam_marker]
    R, t = cv2.calibrateHandEye(
        [r for r, _ in ee_base],
        [p for _, p in ee_base],
        [r for r, _ in cam_marker],
        [p for _, p in cam_marker],
        method=getattr(cv2, f"CALIB_HAND_EYE_{method}"),
    )
    T_base_cam = np.eye(4)
    T_base_cam[:3, :3], T_base_cam[:3, 3] = R, t.ravel()
    # marker in the flange frame, implied by each observation: constant if the calibration is right
    implied = np.array([(invert(Tb) @ T_base_cam @ Tc)[:3, 3] for Tb, Tc in zip(T_base_ee, T_cam_marker)])
    residual = float(np.linalg.norm(implied - implied.mean(axis=0), axis=1).max() * 1000)
    return T_base_cam, residual


def read_observations(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    rows = data.get("observations")
    if not isinstance(rows, list):
        raise CalibrationError(f"{path}: expected a list under 'observations'")
    base, cam = [], []
    for i, row in enumerate(rows):
        try:
            a, b = np.array(row["T_base_ee"], float), np.array(row["T_cam_marker"], float)
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{path}: observation {i}: {exc}") from exc
        if a.shape != (4, 4) or b.shape != (4, 4):
            raise CalibrationError(f"{path}: observation {i}: poses must be 4x4")
        base.append(a)
        cam.append(b)
    return base, cam


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.calibrate",
        description="Eye-to-hand calibration: T_base_cam from flange poses and marker observations (OpenCV).",
        epilog="example: python -m appliance.calibrate --observations calib.yaml --out firmware_config/handeye.yaml",
    )
    parser.add_argument("--observations", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="handeye.yaml to write")
    parser.add_argument("--method", choices=METHODS, default="PARK")
    args = parser.parse_args(argv)
    try:
        T, residual = solve(*read_observations(args.observations), method=args.method)
    except (CalibrationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    document = {
        "T_base_cam": np.round(T, 6).tolist(),
        "method": f"OpenCV calibrateHandEye ({args.method}), eye-to-hand",
        "calibrated": time.strftime("%Y-%m-%d"),
        "residual_mm": round(residual, 2),
    }
    args.out.write_text(yaml.safe_dump(document, sort_keys=False))
    print(f"T_base_cam written to {args.out}; residual {residual:.2f} mm over the observations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
