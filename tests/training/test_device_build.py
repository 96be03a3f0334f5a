"""scripts/device_build: the demo model's first stages trained here, the long ones on a lent GPU machine in one
call, the rest here.

The GPU end runs the same pipeline as here (the training code picks the GPU when there is one), so every end is
tested on this machine: begin puts what travels into the carried folder, the training half packs what the device
tool can bring back (after every stage, so a killed call keeps it), the finishing half takes a build up from it."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from training.reasoning.corpus import fingerprint

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "device_build"
TINY = ["images=40", "vision_steps=3", "language_steps=3", "align_steps=3", "ground_steps=2", "lora_steps=2",
        "augment=2", "test_images=4", "eval_limit=2"]  # fmt: skip


def environment(work: Path, out: Path | None, carry: Path | None) -> dict:
    # no carry named: an empty one, so that a .device/start left by a real begin in the checkout plays no part
    env = dict(os.environ, DEVICE_BUILD_WORK=str(work), PYTHON=sys.executable)
    env["DEVICE_BUILD_CARRY"] = str(carry or work.parent / "no-carry")
    env.pop("OUT", None)
    if out is not None:
        env["OUT"] = str(out)
    return env


def device_build(*args, work: Path, out: Path | None = None, carry: Path | None = None):
    env = environment(work, out, carry)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def fake_carry(root: Path, sets=TINY, checkpoint: bool = True) -> Path:
    """What begin leaves in the carry, its align checkpoint only a config (enough for the checks before training)."""
    start = root / "carry" / "start"
    (start / "align" / "checkpoint-000003").mkdir(parents=True)
    if checkpoint:
        (start / "align" / "checkpoint-000003" / "config.json").write_text("{}")
    (start / "sets.txt").write_text("\n".join(sets) + "\n")
    (start / "stages.txt").write_text("base,vision,language,align\n")
    (start / "corpus.md5").write_text(fingerprint() + "\n")
    return root / "carry"


def unpacked(out: Path) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in sorted(out.glob("build.tgz.*")))))


def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    work, carry = tmp_path / "w", fake_carry(tmp_path)
    assert device_build("train", work=work, carry=carry).returncode != 0  # no OUT: nothing would come back
    alone = device_build("train", work=work, out=tmp_path / "out")
    assert alone.returncode == 2 and "no begin carry" in alone.stderr  # every stage there does not fit a call
    bad = device_build("train", "--set", "ground_steps=lots", work=work, out=tmp_path / "out", carry=carry)
    assert bad.returncode == 2 and "ground_steps" in bad.stderr and not (work / "stages.json").exists()
    assert device_build("sideways", work=work).returncode == 2
    slow = device_build("train", "--budget", "soon", work=work, out=tmp_path / "out", carry=carry)
    assert slow.returncode == 2 and "--budget takes whole seconds, got 'soon'" in slow.stderr
    empty = device_build("finish", str(tmp_path), work=work)
    assert empty.returncode == 2 and "no build.tgz" in empty.stderr
    (tmp_path / "build.tgz.aa").write_bytes(b"\x1f\x8b\x08\x00 cut short")
    cut = device_build("finish", str(tmp_path), work=work)
    assert cut.returncode == 2 and "do not make a whole archive" in cut.stderr
    typo = device_build("finish", str(tmp_path), "--no-instal", work=work)
    assert typo.returncode == 2 and "unknown argument --no-instal" in typo.stderr
    early = device_build("begin", "--sets", "images=4", work=work)
    assert early.returncode == 2 and "unknown argument --sets" in early.stderr
    wrong = device_build("begin", "--set", "vision_steps=many", work=work)
    assert wrong.returncode == 2 and "vision_steps" in wrong.stderr and not (work / "stages.json").exists()


def test_a_carry_that_begin_made_with_other_sizes_is_refused_before_training(tmp_path):
    """train asked for sizes that change a stage begin ran, or with a carry that lacks begin's checkpoint."""
    carry, work = fake_carry(tmp_path), tmp_path / "w"
    refused = device_build("train", "--set", "align_steps=4", work=work, out=tmp_path / "out", carry=carry)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "changes stages begin ran" in refused.stderr
    assert not (work / "stages.json").exists()  # nothing trained
    # a size begin's stages do not read passes that check; the carry without its checkpoint is refused next
    empty = fake_carry(tmp_path / "other", checkpoint=False)
    missing = device_build("train", "--set", "ground_steps=5", work=work, out=tmp_path / "out", carry=empty)
    assert missing.returncode == 2 and "align/checkpoint-000003, which begin did not make" in missing.stderr
    # a carry from another corpus (referring.yaml changed since begin, or a begin before the check) is refused
    stale = fake_carry(tmp_path / "stale")
    (stale / "start" / "corpus.md5").write_text("0" * 32 + "\n")
    old = device_build("train", work=work, out=tmp_path / "out", carry=stale)
    assert old.returncode == 2 and "made from another corpus" in old.stderr and not (work / "stages.json").exists()


def _pack_of(tmp_path: Path, files: dict[str, str], dirs=()) -> Path:
    """A GPU run's parts holding these files and (empty) folders."""
    packed, out = tmp_path / "packed", tmp_path / "out"
    for name, text in files.items():
        (packed / name).parent.mkdir(parents=True, exist_ok=True)
        (packed / name).write_text(text)
    for name in dirs:
        (packed / name).mkdir(parents=True)
    out.mkdir()
    with tarfile.open(out / "build.tgz.aa", "w:gz") as tar:
        for name in [*files, *dirs]:
            tar.add(packed / name, arcname=name)
    return out


def test_finishing_a_gpu_run_without_begin_here_says_there_is_nothing_to_go_on_from(tmp_path):
    """The budget ran out during the ground stage, and this machine has no scenes of begin's to train on."""
    gpu_output = {"device-sets.txt": "strategy=decoder\nlora_steps=2\n", "device-pipeline.out": "== ground: ...\n"}
    out = _pack_of(tmp_path, gpu_output)
    result = device_build("finish", str(out), "--no-install", work=tmp_path / "w")
    assert result.returncode == 1
    assert "nothing here to go on from" in result.stderr and "== ground:" in result.stderr  # the end of its output


def test_finishing_a_gpu_run_cut_short_trains_the_rest_here(tmp_path):
    """The ground checkpoint came back, the tune stage's did not: finish goes on from the RT data, here (not from
    the tune checkpoint an earlier build left in the folder)."""
    from training.pipeline import config_for, demo_model_stages

    here = tmp_path / "here"
    sets = [*TINY, "strategy=decoder"]
    ground = next(s for s in demo_model_stages(config_for("demo-model", sets, environ={}), here) if s.name == "ground")
    record = json.dumps({"ground": {"name": "ground", "command": ground.command, "seconds": 1}})
    gpu_output = {"device-sets.txt": "\n".join(sets) + "\n", "device-pipeline.out": "== tune: ...\n"}
    out = _pack_of(tmp_path, {**gpu_output, "stages.json": record}, dirs=["ground/checkpoint-000002"])
    for name in ("data", "align/checkpoint-000003", "tune/checkpoint-000002"):  # begin's; an earlier build's tune
        (here / name).mkdir(parents=True)
    earlier = {name: {"name": name, "command": "...", "seconds": 2} for name in ("vision", "tune", "quantize")}
    (here / "stages.json").write_text(json.dumps(earlier))  # tune and quantize: an earlier build's, here
    (here / "pipeline.log").write_text("== vision took 2 s\n")
    result = device_build("finish", str(out), "--no-install", work=here)
    assert "the GPU run did not finish training; this machine trains from rt-data on" in result.stderr
    assert "== taken as done (--from rt-data)" in (here / "pipeline.log").read_text()
    record = json.loads((here / "stages.json").read_text())
    assert {"vision", "ground"} <= set(record)  # both machines' records
    assert not {"tune", "quantize"} & set(record)  # not the earlier build's: taken as done, they would not run
    assert (here / "pipeline.log").read_text().startswith("== vision took 2 s")
    # (the stage fails: the scenes here are empty folders) run again: the parts are not unpacked over it twice
    again = device_build("finish", str(out), "--no-install", work=here)
    assert "this machine trains from rt-data on" in again.stderr
    assert (here / "pipeline.log").read_text().count("== vision took 2 s") == 1


def test_finishing_on_a_checkout_whose_corpus_changed_since_begin_is_refused(tmp_path):
    here = tmp_path / "here"
    here.mkdir()
    begun = {"language": {"name": "language", "command": "...", "seconds": 2, "reads": "corpus md5 " + "0" * 32}}
    (here / "stages.json").write_text(json.dumps(begun))
    (here / "pipeline.log").write_text("== language took 2 s\n")
    out = _pack_of(tmp_path, {"device-sets.txt": "strategy=decoder\n", "device-pipeline.out": "== ground: ...\n"})
    result = device_build("finish", str(out), "--no-install", work=here)
    assert result.returncode == 2 and "the language stage learned another corpus" in result.stderr
    assert "taken as done" not in (here / "pipeline.log").read_text()  # nothing ran


@pytest.mark.slow
def test_begin_here_train_there_finish_here(tmp_path):
    """The split build with tiny sizes (about 5 min): begin trains the first stages here and puts the align
    checkpoint into the carry; the GPU end takes it, trains the rest and packs only what it trained; finish
    keeps both machines' records."""
    here, gpu, carry, out = tmp_path / "here", tmp_path / "gpu", tmp_path / "carry", tmp_path / "out"
    sets = [arg for s in TINY for arg in ("--set", s)]
    begun = device_build("begin", *sets, work=here, carry=carry)
    assert begun.returncode == 0, begun.stdout[-2000:] + begun.stderr[-2000:]
    assert (carry / "start" / "align" / "checkpoint-000003" / "model.safetensors").is_file()
    assert not list((carry / "start").rglob("trainer_state.pt"))
    trained = device_build("train", "--budget", "500", work=gpu, out=out, carry=carry)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert "== taken as done (--skip): base, vision, language, align, evaluate" in trained.stdout
    assert f"--model {gpu}/align/checkpoint-000003" in trained.stdout  # the ground stage started from begin's
    with unpacked(out) as tar:
        names = tar.getnames()
    assert any(n.startswith("tune/checkpoint-000002") for n in names)
    assert not any(n.startswith(("align/", "vision/")) for n in names)  # those are here already
    finished = device_build("finish", str(out), "--no-install", work=here, carry=carry)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    record = json.loads((here / "stages.json").read_text())
    assert {"base", "vision", "align", "ground", "tune", "quantize", "eval-q4-clutter"} <= set(record)
    log = (here / "pipeline.log").read_text()
    assert log.index("== vision took") < log.index("== ground took") < log.index("== quantize took")
    assert log.index("== ground took") < log.index("== evaluate took")  # the fold scored here, where its scenes are
    assert (here / "eval.json").is_file()


@pytest.mark.slow
def test_a_killed_call_keeps_what_its_finished_stages_packed(tmp_path):
    """The device tool kills a command at its limit, and only what is under $OUT comes back: the training half
    packs after every stage, so a kill (here SIGKILL of everything, mid-stage) loses only the stage it cut."""
    out, work = tmp_path / "out", tmp_path / "w"
    env = environment(work, out, fake_carry(tmp_path, sets=[*TINY[1:], "images=60"]))
    script = subprocess.Popen(["bash", str(SCRIPT), "train", "--budget", "500"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and '"data"' not in _packed_record(out):
            time.sleep(0.5)
        running = script.poll() is None
    finally:
        os.killpg(script.pid, signal.SIGKILL)  # the script, then its pipeline (its own group) and the stages
        subprocess.run(["pkill", "-KILL", "-f", f"--work {work}"], check=False)
        subprocess.run(["pkill", "-KILL", "-f", f"--out {work}/"], check=False)
        script.wait()
    assert running  # killed mid-run, before any last pack
    record = json.loads(_packed_record(out))
    assert "data" in record and "ground" not in record


def _packed_record(out: Path) -> str:
    try:
        with unpacked(out) as tar:
            return tar.extractfile("stages.json").read().decode()
    except (tarfile.TarError, KeyError, OSError, EOFError):
        return "{}"


@pytest.mark.slow
def test_a_run_over_its_budget_is_stopped_whole_and_still_packs_its_logs(tmp_path):
    """The device tool gives a command 600 s: the pipeline is stopped in time to pack, its stage processes too."""
    out, work = tmp_path / "out", tmp_path / "w"
    carry = fake_carry(tmp_path, sets=[*TINY[1:], "images=400"])
    result = device_build("train", "--budget", "40", work=work, out=out, carry=carry)
    assert result.returncode == 124 and "the budget of 40 s ran out" in result.stdout
    assert "== data: python -m training.synth" in result.stdout  # stopped while rendering
    assert "rendered a scene with MUJOCO_GL=" in result.stdout  # the GL check ran before the budget began
    with unpacked(out) as tar:
        names = tar.getnames()
    assert "device-pipeline.out" in names and "device-sets.txt" in names
    left = subprocess.run(["pgrep", "-f", "--", f"--out {work}/data"], capture_output=True, text=True)
    assert left.returncode == 1, left.stdout  # no renderer left behind (1: nothing matched; 2 would be a misuse)
