from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.config import ConfigError, load_config
from appliance.sim.cell import SimCellConfig


@dataclass(frozen=True)
class Inner:
    speed: float = 0.1
    name: str = "x"


@dataclass(frozen=True)
class Outer:
    port: int
    limits: tuple[float, float] = (0.0, 1.0)
    inner: Inner = field(default_factory=Inner)
    path: Path | None = None


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_loads_nested_values(tmp_path):
    cfg = load_config(
        write(tmp_path, "top:\n  port: 5\n  limits: [1, 2]\n  inner: {speed: 2}\n  path: /tmp\n"), "top", Outer
    )
    assert cfg == Outer(5, (1.0, 2.0), Inner(2.0), Path("/tmp"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("top:\n  port: 5\n  inner: {sped: 2}\n", r"top.inner.sped: unknown key \(known: name, speed\)"),
        ("top:\n  port: five\n", r"top.port: expected int, got 'five'"),
        ("top:\n  port: 5\n  limits: [1]\n", r"top.limits: expected 2 values, got 1"),
        ("top:\n  limits: [1, 2]\n", r"top.port: required key is missing"),
        ("top:\n  port: true\n", r"top.port: expected int"),
        ("other: {}\n", r"no 'top' section"),
        ("top: [1, 2\n", r"not valid YAML"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), "top", Outer)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="absent.yaml: cannot read"):
        load_config(tmp_path / "absent.yaml", "top", Outer)


def test_the_shipped_sim_config_loads_and_is_checked(tmp_path):
    cfg = load_config(Path(__file__).resolve().parents[2] / "firmware_config" / "sim.yaml", "sim", SimCellConfig)
    assert len(cfg.categories) == 19 and cfg.camera.fovy == 40.0
    bad = write(tmp_path, "sim:\n  categories: [mug, teapot]\n")
    with pytest.raises(ConfigError, match="unknown categories"):
        load_config(bad, "sim", SimCellConfig)
