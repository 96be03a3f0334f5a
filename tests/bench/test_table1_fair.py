"""[O]'s driver end to end at toy size: the gate, the pilot's curves on set-aside images, every cell through the
runner (and resumed after a crash between a checkpoint and its evaluation), the report's statistics."""

import json
import shutil

import pytest

pytest.importorskip("mujoco")
pytest.importorskip("peft")

from bench import table1_fair  # noqa: E402
from bench.table1_fair import flattened, pose_spans, still_rising  # noqa: E402


def test_a_curve_flattens_where_it_stops_rising():
    assert flattened([(50, 0.1), (100, 0.5), (150, 0.6), (200, 0.62), (250, 0.61)]) == 150
    assert flattened([(50, 0.3), (100, 0.2), (150, 0.31)]) == 50
    assert flattened([(50, 0.1), (100, 0.9)]) == 100
    assert still_rising([(50, 0.1), (100, 0.9)]) and not still_rising([(50, 0.1), (100, 0.5), (150, 0.51)])


def test_passes_of_like_length_are_a_speed_setting_not_part_of_a_cell(tmp_path):
    """--length-split reaches training.train, but a finished cell trained with another split is not retrained."""
    import argparse

    args = argparse.Namespace(work=tmp_path, base=tmp_path / "base", lr_pretrain=2e-3, lr_lora=1e-3, batch_size=32,
                              micro_batch=16, length_split=4)  # fmt: skip
    (train, merge), _ = table1_fair.train_stages(args, "iw0-rt-lora", tmp_path / "data", "lora", 100, 1)
    assert train.speed == ("--length-split", "4") and "--length-split" not in train.command
    args.length_split = 1
    (one, _), _ = table1_fair.train_stages(args, "iw0-rt-lora", tmp_path / "data", "lora", 100, 1)
    assert one.speed == () and one.command == train.command


def test_the_pose_tokens_are_the_answer_s_last_three_numbers():
    answer = "The mug is 0.5 tall. [0.50, 0.42], -0.79"
    spans = pose_spans(answer, 10)
    assert [answer[a - 10 : b - 10] for a, b in spans] == ["0.50", "0.42", "-0.79"]
    nr_b = "Grasp point coordinates: [0.50, 0.42] Rotation angle in radians: -0.79"
    assert [nr_b[a:b] for a, b in pose_spans(nr_b, 0)] == ["0.50", "0.42", "-0.79"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from training.synth import SynthConfig, write_synthetic_dataset

    config = SynthConfig(seed=21, instances=1, objects=(1, 3))
    return write_synthetic_dataset(tmp_path_factory.mktemp("t1"), 15, config, workers=1, progress=False)


@pytest.mark.slow  # 30-33 s with its scenes: the gate, a pilot, two resumes and nine training runs
def test_gate_pilot_run_and_report(scenes, tiny_spm_checkpoint, tmp_path, capsys, monkeypatch):
    # the random base never writes </s>: eight tokens per answer keep every generation short (none parses anyway)
    monkeypatch.setattr("training.evaluate.MAX_NEW_TOKENS", 8)
    monkeypatch.chdir(tmp_path)  # relative folders, as a user types them
    out, work = tmp_path / "t1", tmp_path / "work"
    common = ["--root", str(scenes), "--base", str(tiny_spm_checkpoint), "--out", "t1", "--work", "work", "--strategies", "pretrain",
              "--batch-size", "2", "--micro-batch", "2", "--augment", "0", "--validation", "3"]  # fmt: skip
    assert table1_fair.main(["gate", *common, "--gate-records", "3"]) == 0
    gate = json.loads((out / "gate.json").read_text())
    assert set(gate["rows"]) == {"rt", "nr-a", "nr-b"}
    for row in gate["rows"].values():  # a random base: nothing parses, every pose token costs about log(vocab)
        assert row["parse_rate"] == 0.0 and 3.0 < row["pose_token_loss"] < 12.0
    assert gate["comparable"] is (gate["loss_ratio"] <= 1.5)

    pilot_args = ["pilot", *common, "--pilot-steps", "2", "--every", "1", "--save-every", "1"]
    assert table1_fair.main(pilot_args) == 0
    pilot = json.loads((out / "pilot.json").read_text())
    assert sorted(pilot["curves"]) == ["pilot-nr-a-pretrain", "pilot-nr-b-pretrain", "pilot-rt-pretrain"]
    assert all([s for s, _ in curve] == [1, 2] for curve in pilot["curves"].values())
    assert pilot["S"] in (1, 2) and (out / "learning-curves.png").stat().st_size > 1000
    val = {r["source"] for r in json.loads((work / "data" / "pilot-rt" / "val.json").read_text())}
    test = {r["source"] for r in json.loads((work / "data" / "pilot-rt" / "test.json").read_text())}
    assert len(val) == 3 and not val & test  # the curves never read the test fold

    # a pilot run stopped after its first checkpoint goes on from there, not from step 0
    stopped = work / "runs" / "pilot-nr-b-pretrain-2"
    shutil.rmtree(stopped / "checkpoint-000002")
    stamp = (stopped / "checkpoint-000001").stat().st_mtime
    assert table1_fair.main(pilot_args) == 0
    assert (stopped / "checkpoint-000002").is_dir() and (stopped / "checkpoint-000001").stat().st_mtime == stamp
    logged = [line.split(",")[0] for line in (stopped / "metrics.csv").read_text().splitlines()[1:]]
    assert logged == ["1", "2"]  # step 2 trained again (the cut run's row dropped), step 1 not
    resumed = json.loads((out / "pilot.json").read_text())["curves"]["pilot-nr-b-pretrain"]
    assert [s for s, _ in resumed] == [1, 2] and resumed[0] == pilot["curves"]["pilot-nr-b-pretrain"][0]
    # stopped before its first checkpoint: it starts over, and its log with it
    early = work / "runs" / "pilot-rt-pretrain-2"
    for checkpoint in early.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    assert table1_fair.main(pilot_args) == 0
    assert [line.split(",")[0] for line in (early / "metrics.csv").read_text().splitlines()] == ["step", "1", "2"]

    run = [*common, "--splits", "cw", "--folds", "0,1"]
    assert table1_fair.main(["run", *run, "--steps", "2"]) == 0
    evaluations = sorted(p.name for p in (work / "eval").glob("*.json"))
    assert len(evaluations) == 2 * 3 + 3  # folds × rows, and the replicate seed on fold 0
    assert "cw0-rt-pretrain-seed2.json" in evaluations
    train_log = (work / "logs" / "train-cw1-nr-b-pretrain.log").read_text()
    assert "--warmup 1" in train_log and "--seed 1" in train_log
    cw = [json.loads((work / "eval" / f"cw{k}-rt-pretrain.json").read_text()) for k in (0, 1)]
    assert all(c["n"] > 0 and all(a["kind"] != "absent" for a in c["answers"]) for c in cw)

    # a crash between a cell's checkpoint and its evaluation: the rerun evaluates and trains nothing again
    (work / "eval" / "cw1-nr-a-pretrain.json").unlink()
    stamp = (work / "runs" / "cw1-nr-a-pretrain" / "checkpoint-000002").stat().st_mtime
    assert table1_fair.main(["run", *run, "--steps", "2"]) == 0
    assert (work / "eval" / "cw1-nr-a-pretrain.json").is_file()
    assert (work / "runs" / "cw1-nr-a-pretrain" / "checkpoint-000002").stat().st_mtime == stamp

    capsys.readouterr()
    assert table1_fair.main(["report", *run]) == 0
    table = json.loads((out / "table1.json").read_text())
    row = table["rows"]["rt/pretrain"]["cw"]["rectangle"]
    assert row["n"] == sum(f["n"] for f in row["folds"].values()) == cw[0]["n"] + cw[1]["n"]
    low, high = row["wilson95"]
    assert 0.0 <= low <= row["pooled"] <= high <= 1.0
    assert set(table["paired_tests"]["cw"]["part"]["pretrain"]) == {"rt vs nr-a", "rt vs nr-b", "nr-a vs nr-b"}
    assert {"floor", "oracle"} <= set(table["rows"]) and "part" in table["rows"]["floor"]["cw"]
    assert "category-wise" in (out / "table1.md").read_text()
    replicate = row["replicate"]
    assert replicate["seed"] == 2 and replicate["accuracy_train_seed"] == row["folds"]["0"]["accuracy"]
    assert "trained again with another seed" in (out / "table1.md").read_text()
