"""Camera backends: replay and recorder for real; the Kinect and Orbbec adapters up to their SDK boundary.

Nothing here can stand in for a Kinect or a Femto, so their SDK modules are replaced by small fakes in
``sys.modules`` that behave as the SDKs document (BGRA colour, millimetre depth, calibration objects);
everything on our side of that boundary runs for real.
"""

import sys
import types

import numpy as np
import pytest

from appliance.camera import CameraError, CameraTimeout, Frame, camera_config, make_camera
from appliance.camera.replay import Recorder
from appliance.config import ConfigError
from appliance.geometry import Intrinsics

K = Intrinsics(600.0, 600.0, 320.0, 240.0, 640, 480)


def _frame(seed=0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 0.8, (480, 640)).astype(np.float32)
    depth[0, 0] = np.nan
    return Frame(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), depth, K)


def test_recorder_and_replay_round_trip(tmp_path):
    frames = [_frame(i) for i in range(2)]
    recorder = Recorder(tmp_path)
    for f in frames:
        recorder.write(f)
    with make_camera(camera_config({"type": "replay", "directory": str(tmp_path), "loop": False})) as cam:
        for want in frames:
            got = cam.read()
            assert np.array_equal(got.rgb, want.rgb) and np.array_equal(got.depth, want.depth, equal_nan=True)
            assert got.intrinsics == K
        with pytest.raises(CameraTimeout):
            cam.read()
    Recorder(tmp_path).write(frames[0])  # appends after the last frame
    assert len(list(tmp_path.glob("*-rgb.png"))) == 3


def test_replay_errors(tmp_path):
    with pytest.raises(CameraError, match="not a recording"):
        make_camera(camera_config({"type": "replay", "directory": str(tmp_path)})).connect()
    with pytest.raises(ConfigError, match="unknown camera"):
        camera_config({"type": "webcam"})
    with pytest.raises(ConfigError, match="required key"):
        camera_config({"directory": "x"})


def test_frames_are_checked():
    with pytest.raises(CameraError, match="not aligned"):
        Frame(np.zeros((480, 640, 3), np.uint8), np.zeros((240, 320), np.float32), K)
    with pytest.raises(CameraError, match="intrinsics"):
        Frame(np.zeros((100, 100, 3), np.uint8), np.zeros((100, 100), np.float32), K)


def _fake_pyk4a(color, depth_mm, fail_start=False):
    sdk = types.ModuleType("pyk4a")
    sdk.ColorResolution = types.SimpleNamespace(RES_720P="720p")
    sdk.DepthMode = types.SimpleNamespace(NFOV_UNBINNED="nfov")
    sdk.CalibrationType = types.SimpleNamespace(COLOR="color")
    sdk.Config = lambda **kw: kw

    class Calibration:
        def get_camera_matrix(self, which):
            assert which == "color"
            return np.array([[600.0, 0, 320.0], [0, 600.0, 240.0], [0, 0, 1]])

    class PyK4A:
        def __init__(self, config, device_id=0):
            self.config, self.started, self.calibration = config, False, Calibration()

        def start(self):
            if fail_start:
                raise RuntimeError("device not found")
            self.started = True

        def stop(self):
            self.started = False

        def get_capture(self, timeout=-1):
            return types.SimpleNamespace(color=color, transformed_depth=depth_mm)

    sdk.PyK4A = PyK4A
    return sdk


def test_k4a_adapter_converts_bgra_and_millimetres(monkeypatch):
    bgra = np.zeros((480, 640, 4), np.uint8)
    bgra[..., 0], bgra[..., 2] = 10, 200  # blue 10, red 200
    depth_mm = np.full((480, 640), 700, np.uint16)
    depth_mm[5, 5] = 0
    monkeypatch.setitem(sys.modules, "pyk4a", _fake_pyk4a(bgra, depth_mm))
    cam = make_camera(camera_config({"type": "k4a", "exposure_us": 8000, "white_balance_k": 4500}))
    with cam:
        assert cam._device.exposure == 8000 and cam._device.whitebalance == 4500
        frame = cam.read()
    assert frame.rgb[0, 0].tolist() == [200, 0, 10]
    assert frame.depth[0, 0] == pytest.approx(0.7) and np.isnan(frame.depth[5, 5])
    assert frame.intrinsics == K


def test_k4a_missing_sdk_and_failed_start_are_clear(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyk4a", None)
    with pytest.raises(CameraError, match="Azure Kinect SDK"):
        make_camera(camera_config({"type": "k4a"})).connect()
    monkeypatch.setitem(sys.modules, "pyk4a", _fake_pyk4a(None, None, fail_start=True))
    with pytest.raises(CameraError, match="did not start"):
        make_camera(camera_config({"type": "k4a"})).connect()
    with pytest.raises(ConfigError, match="white_balance_k"):
        camera_config({"type": "k4a", "white_balance_k": 4505})


def _fake_orbbec(rgb, depth_raw, scale):
    sdk = types.ModuleType("pyorbbecsdk")
    sdk.OBSensorType = types.SimpleNamespace(COLOR_SENSOR="c", DEPTH_SENSOR="d")
    sdk.OBFormat = types.SimpleNamespace(RGB="rgb")
    sdk.OBStreamType = types.SimpleNamespace(COLOR_STREAM="cs")
    sdk.OBPropertyID = types.SimpleNamespace(
        **{
            n: n
            for n in (
                "OB_PROP_COLOR_AUTO_EXPOSURE_BOOL",
                "OB_PROP_COLOR_EXPOSURE_INT",
                "OB_PROP_COLOR_AUTO_WHITE_BALANCE_BOOL",
                "OB_PROP_COLOR_WHITE_BALANCE_INT",
            )
        }
    )

    class VideoFrame:
        def __init__(self, data, scale=None):
            self.data, self.scale = data, scale

        def get_data(self):
            return self.data.tobytes() if self.data.dtype == np.uint16 else self.data.ravel()

        def get_width(self):
            return self.data.shape[1]

        def get_height(self):
            return self.data.shape[0]

        def get_depth_scale(self):
            return self.scale

    class Frames:
        def get_color_frame(self):
            return VideoFrame(rgb)

        def get_depth_frame(self):
            return VideoFrame(depth_raw, scale)

    class Profiles:
        def get_video_stream_profile(self, w, h, fmt, fps):
            return ("colour", w, h, fmt, fps)

        def get_default_video_stream_profile(self):
            return "depth"

    class Device:
        def __init__(self):
            self.props = {}

        def set_bool_property(self, k, v):
            self.props[k] = v

        set_int_property = set_bool_property

    class Pipeline:
        def __init__(self):
            self.device = Device()

        def get_stream_profile_list(self, sensor):
            return Profiles()

        def start(self, config):
            self.config = config

        def stop(self):
            pass

        def get_device(self):
            return self.device

        def get_camera_param(self):
            return types.SimpleNamespace(
                rgb_intrinsic=types.SimpleNamespace(fx=600.0, fy=600.0, cx=320.0, cy=240.0, width=640, height=480)
            )

        def wait_for_frames(self, timeout_ms):
            return Frames()

    class Config:
        def __init__(self):
            self.streams = []

        def enable_stream(self, profile):
            self.streams.append(profile)

    sdk.Pipeline, sdk.Config = Pipeline, Config
    sdk.AlignFilter = lambda align_to_stream: types.SimpleNamespace(process=lambda frames: frames)
    return sdk


def test_orbbec_adapter_scales_depth_and_sets_colour_controls(monkeypatch):
    rgb = np.full((480, 640, 3), 7, np.uint8)
    raw = np.full((480, 640), 7000, np.uint16)  # 0.1 mm units
    raw[1, 1] = 0
    monkeypatch.setitem(sys.modules, "pyorbbecsdk", _fake_orbbec(rgb, raw, 0.1))
    cam = make_camera(camera_config({"type": "orbbec", "exposure_us": 5000, "white_balance_k": 4000}))
    with cam:
        props = cam._pipeline.device.props
        frame = cam.read()
    assert props["OB_PROP_COLOR_EXPOSURE_INT"] == 5000 and props["OB_PROP_COLOR_AUTO_EXPOSURE_BOOL"] is False
    assert frame.depth[0, 0] == pytest.approx(0.7) and np.isnan(frame.depth[1, 1])
    assert frame.rgb.shape == (480, 640, 3) and frame.intrinsics == K


def test_orbbec_missing_sdk(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyorbbecsdk", None)
    with pytest.raises(CameraError, match="pyorbbecsdk2"):
        make_camera(camera_config({"type": "orbbec"})).connect()
