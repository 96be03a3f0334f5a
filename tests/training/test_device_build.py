"""scripts/device_build: the demo model trained on a lent GPU machine in one call, finished here.

The GPU end runs the same pipeline as here (the training code picks the GPU when there is one), so both ends are
tested on this machine: the training half packs what the device tool can bring back, the finishing half takes a
build up from it."""

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "device_build"
TINY = ["images=40", "vision_steps=3", "language_steps=3", "align_steps=3", "ground_steps=2", "lora_steps=2",
        "augment=2", "test_images=4", "eval_limit=2"]  # fmt: skip


def device_build(*args, work: Path, out: Path | None = None):
    env = dict(os.environ, DEVICE_BUILD_WORK=str(work), PYTHON=sys.executable)
    env.pop("OUT", None)
    if out is not None:
        env["OUT"] = str(out)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    work = tmp_path / "w"
    assert device_build("train", work=work).returncode != 0  # no OUT: nothing would come back
    bad = device_build("train", "--set", "ground_steps=lots", work=work, out=tmp_path / "out")
    assert bad.returncode == 2 and "ground_steps" in bad.stderr and not (work / "stages.json").exists()
    assert device_build("sideways", work=work).returncode == 2
    slow = device_build("train", "--budget", "soon", work=work, out=tmp_path / "out")
    assert slow.returncode == 2 and "--budget takes whole seconds, got 'soon'" in slow.stderr
    empty = device_build("finish", str(tmp_path), work=work)
    assert empty.returncode == 2 and "no build.tgz" in empty.stderr
    (tmp_path / "build.tgz.aa").write_bytes(b"\x1f\x8b\x08\x00 cut short")
    cut = device_build("finish", str(tmp_path), work=work)
    assert cut.returncode == 2 and "do not make a whole archive" in cut.stderr
    typo = device_build("finish", str(tmp_path), "--no-instal", work=work)
    assert typo.returncode == 2 and "unknown argument --no-instal" in typo.stderr


def test_finishing_a_gpu_run_that_did_not_train_to_the_end_says_so(tmp_path):
    """The budget ran out during the ground stage: the parts hold logs but no tuned model."""
    packed = tmp_path / "packed"
    (packed / "logs").mkdir(parents=True)
    (packed / "device-sets.txt").write_text("strategy=decoder\nlora_steps=2\n")
    (packed / "device-pipeline.out").write_text("== ground: python -m training.train ...\n")
    out = tmp_path / "out"
    out.mkdir()
    with tarfile.open(out / "build.tgz.aa", "w:gz") as tar:
        for name in ("logs", "device-sets.txt", "device-pipeline.out"):
            tar.add(packed / name, arcname=name)
    result = device_build("finish", str(out), "--no-install", work=tmp_path / "w")
    assert result.returncode == 1
    assert "did not finish training" in result.stderr and "tune/checkpoint-000002" in result.stderr
    assert "== ground:" in result.stderr  # the end of its output


@pytest.mark.slow
def test_a_build_trained_at_one_end_is_finished_at_the_other(tmp_path):
    """Both halves with tiny sizes (about 4 min): the parts fit what the device tool brings back, and the finishing
    half quantizes and scores the model trained at the other end without training anything."""
    gpu_work, out = tmp_path / "gpu", tmp_path / "out"
    sets = [arg for s in TINY for arg in ("--set", s)]
    trained = device_build("train", "--budget", "500", *sets, work=gpu_work, out=out)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    parts = sorted(out.iterdir())
    assert 1 <= len(parts) <= 7 and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    assert sum(p.stat().st_size for p in parts) <= 64 * 2**20
    here = tmp_path / "here"  # another machine: only the parts travel
    finished = device_build("finish", str(out), "--no-install", work=here)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    log = (here / "pipeline.log").read_text()
    assert "== taken as done (--from quantize): data, base, vision" in log
    ran_here = log.split("taken as done")[1]
    assert "== tune:" not in ran_here and "== quantize: python -m export.quantize" in ran_here
    for name in ("eval.json", "eval-q4-single.json", "eval-q4-clutter.json", "eval-torch-clutter.json"):
        assert (here / name).is_file(), name
    assert not (here / "data").exists()  # the training images stayed at the other end
    assert not list(here.rglob("trainer_state.pt"))  # no optimizer state travelled


def test_a_run_over_its_budget_is_stopped_whole_and_still_packs_its_logs(tmp_path):
    """The device tool gives a command 600 s: the pipeline is stopped in time to pack, its stage processes too."""
    out, work = tmp_path / "out", tmp_path / "w"
    result = device_build("train", "--budget", "25", "--set", "images=400", work=work, out=out)
    assert result.returncode == 124 and "the budget of 25 s ran out" in result.stdout
    assert "== data: python -m training.synth" in result.stdout  # stopped while rendering
    assert "rendered a scene with MUJOCO_GL=" in result.stdout  # the GL check ran before the budget began
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in sorted(out.iterdir())))) as tar:
        names = tar.getnames()
    assert "device-pipeline.out" in names and "device-sets.txt" in names
    left = subprocess.run(["pgrep", "-f", "--", f"--out {work}/data"], capture_output=True, text=True)
    assert left.returncode == 1, left.stdout  # no renderer left behind (1: nothing matched; 2 would be a misuse)
