"""Hand-eye calibration recovers a known camera pose from synthetic observations."""

import numpy as np
import pytest
import yaml

pytest.importorskip("cv2")

from appliance.calibrate import CalibrationError, main, solve  # noqa: E402
from appliance.geometry import invert, pose_matrix, rotation_exp  # noqa: E402


def synthetic(n=12, noise_m=0.0, seed=0):
    rng = np.random.default_rng(seed)
    T_base_cam = pose_matrix(rotation_exp(np.array([np.pi, 0.05, -0.1])), (0.52, 0.03, 0.71))
    T_ee_marker = pose_matrix(rotation_exp(np.array([0.1, -0.2, 0.3])), (0.0, 0.02, 0.09))
    base, cam = [], []
    for _ in range(n):
        T_base_ee = pose_matrix(
            rotation_exp(rng.normal(0, 0.4, 3)) @ np.diag([1.0, -1.0, -1.0]),
            (rng.uniform(0.35, 0.65), rng.uniform(-0.2, 0.2), rng.uniform(0.15, 0.4)),
        )
        T_cam_marker = invert(T_base_cam) @ T_base_ee @ T_ee_marker
        T_cam_marker[:3, 3] += rng.normal(0, noise_m, 3)
        base.append(T_base_ee)
        cam.append(T_cam_marker)
    return T_base_cam, base, cam


def test_recovers_the_camera_pose():
    truth, base, cam = synthetic()
    T, residual = solve(base, cam)
    assert np.abs(T - truth).max() < 1e-6 and residual < 1e-3


def test_noise_shows_in_the_residual():
    truth, base, cam = synthetic(noise_m=0.002)
    T, residual = solve(base, cam)
    assert np.linalg.norm(T[:3, 3] - truth[:3, 3]) < 0.01 and 1.0 < residual < 20.0


def test_cli_writes_a_loadable_handeye_file(tmp_path):
    from appliance.config import from_dict
    from appliance.daemon.settings import HandEye

    _, base, cam = synthetic()
    obs = tmp_path / "calib.yaml"
    obs.write_text(
        yaml.safe_dump(
            {"observations": [{"T_base_ee": b.tolist(), "T_cam_marker": c.tolist()} for b, c in zip(base, cam)]}
        )
    )
    out = tmp_path / "handeye.yaml"
    assert main(["--observations", str(obs), "--out", str(out)]) == 0
    handeye = from_dict(HandEye, yaml.safe_load(out.read_text()), "handeye")
    assert handeye.residual_mm is not None and handeye.residual_mm < 0.1


def test_too_few_observations():
    _, base, cam = synthetic(n=2)
    with pytest.raises(CalibrationError, match="at least 3"):
        solve(base, cam)
