"""The pipeline runner: stages as a table, skipped when finished, whole logs, times, and failures that say why."""

import dataclasses
import json
import os

import pytest

from training import pipeline
from training.model_card import read_stages
from training.pipeline import PipelineConfig, PipelineError, Runner, Stage, config_for, main, tiny_stages

MODULE = "tests.training.pipeline_stage"


def stage(name, work, *extra, in_process=False):
    out = work / f"{name}.txt"
    return Stage(name, MODULE, (str(out), *extra), (str(out),), in_process)


@pytest.mark.parametrize("in_process", [False, True])
def test_stages_run_in_order_with_whole_logs_and_times_then_are_skipped(tmp_path, in_process):
    stages = [stage(n, tmp_path, in_process=in_process) for n in ("a", "b", "c")]
    rows = Runner(tmp_path, echo=lambda line: None).run(stages)
    assert [r["name"] for r in rows] == ["a", "b", "c"] and not any(r["skipped"] for r in rows)
    log = (tmp_path / "logs" / "b.log").read_text()
    assert log.startswith("$ python -m tests.training.pipeline_stage") and log.count("a long log line") == 50
    record = json.loads((tmp_path / "stages.json").read_text())
    assert set(record) == {"a", "b", "c"} and all(r["seconds"] >= 0 for r in record.values())
    assert [s[0] for s in read_stages(tmp_path / "pipeline.log")] == ["a", "b", "c"]  # what the model card reads
    assert f"== machine: {os.cpu_count()} CPU cores" in (tmp_path / "pipeline.log").read_text()
    again = Runner(tmp_path, echo=lambda line: None).run(stages)
    assert all(r["skipped"] for r in again)


def test_a_changed_command_or_a_missing_output_runs_that_stage_and_every_later_one(tmp_path):
    runner = Runner(tmp_path, echo=lambda line: None)
    stages = [stage(n, tmp_path) for n in ("a", "b", "c")]
    runner.run(stages)
    (tmp_path / "b.txt").unlink()
    assert [r["skipped"] for r in runner.run(stages)] == [True, False, False]
    changed = [stages[0], stage("b", tmp_path, "extra"), stages[2]]
    assert [r["skipped"] for r in runner.run(changed)] == [True, False, False]
    assert (tmp_path / "b.txt").read_text().endswith("extra")


def test_a_stage_whose_reads_changed_runs_again_and_every_later_one(tmp_path, monkeypatch):
    # the base and language stages learn the corpus, which the code writes: a new corpus must retrain them even
    # though their commands are the same (scripts/device_build's begin relies on it)
    monkeypatch.setitem(pipeline.FINGERPRINTS, "corpus", lambda: "md5 1")
    runner = Runner(tmp_path, echo=lambda line: None)
    stages = [stage("a", tmp_path), dataclasses.replace(stage("b", tmp_path), reads=("corpus",)), stage("c", tmp_path)]
    runner.run(stages)
    assert json.loads((tmp_path / "stages.json").read_text())["b"]["reads"] == "corpus md5 1"
    assert [r["skipped"] for r in runner.run(stages)] == [True, True, True]
    monkeypatch.setitem(pipeline.FINGERPRINTS, "corpus", lambda: "md5 2")
    assert [r["skipped"] for r in runner.run(stages)] == [True, False, False]
    assert json.loads((tmp_path / "stages.json").read_text())["b"]["reads"] == "corpus md5 2"
    record = json.loads((tmp_path / "stages.json").read_text())
    del record["b"]["reads"]  # a record from before stages read anything: runs again too
    (tmp_path / "stages.json").write_text(json.dumps(record))
    assert [r["skipped"] for r in runner.run(stages)] == [True, False, False]


def test_a_finished_stage_whose_check_finds_it_stale_runs_again_and_every_later_one(tmp_path):
    lines = []
    runner = Runner(tmp_path, echo=lines.append)
    checked = dataclasses.replace(stage("b", tmp_path), check=("--check",))
    stages = [stage("a", tmp_path), checked, stage("c", tmp_path)]
    runner.run(stages)
    assert not (tmp_path / "b.txt").read_text().endswith("--check")  # the check is not part of the run
    assert [r["skipped"] for r in runner.run(stages)] == [True, True, True]
    (tmp_path / "b.txt.stale").touch()  # the code would now write b otherwise
    assert [r["skipped"] for r in runner.run(stages)] == [True, False, False]
    assert any("b: finished in an earlier run, but out of date (checked)" in line for line in lines)
    (tmp_path / "b.txt.stale").unlink()
    (tmp_path / "b.txt.broken").touch()  # a check that cannot say: the run stops, saying so
    with pytest.raises(PipelineError, match=r"stage b: its check \(--check\) failed \(exit code 5\): checked"):
        runner.run(stages)


def test_the_stages_that_build_records_check_them_before_they_are_skipped(tmp_path):
    stages = tiny_stages(config_for("demo-model", environ={}), tmp_path)[0]
    assert {s.name for s in stages if s.check} == {"describe", "ground-data", "rt-data"}
    assert all(s.check == ("--check",) and s.module == "training.build_dataset" for s in stages if s.check)


def test_a_dataset_of_ones_own_is_checked_recorded_and_read_by_every_stage(tmp_path, capsys):
    from training.datasets.toy import write_toy_dataset

    root = write_toy_dataset(tmp_path / "mine", images=4, seed=1, objects=2)
    stages = tiny_stages(config_for("tiny", [f"data={root}", "ground_steps=10"], environ={}), tmp_path / "w")[0]
    assert stages[0].command == f"python -m training.datasets {root} --record {tmp_path}/w/data.json"
    reads = [s for s in stages if str(root) in s.args]
    assert {s.name for s in reads} == {"data", "vision", "describe", "ground-data", "rt-data", "evaluate"}
    assert not any(f"{tmp_path}/w/data" in a and not a.endswith(".json") for s in stages for a in s.args)
    work = tmp_path / "w"
    assert main(["tiny", "--work", str(work), "--set", f"data={root}", "--until", "data"]) == 0
    recorded = json.loads((work / "data.json").read_text())
    assert recorded["images"] == 4 and recorded["files"].startswith("md5 ")
    assert json.loads((work / "recipe.json").read_text()) == {"pipeline": "tiny", "set": [f"data={root}"]}
    assert main(["tiny", "--work", str(work), "--set", f"data={root}", "--until", "data"]) == 0
    assert "data: finished in an earlier run, skipped" in capsys.readouterr().out
    os.utime(root / "pcd0000cpos.txt", ns=(1, 1))  # relabelled (a new modification time)
    assert main(["tiny", "--work", str(work), "--set", f"data={root}", "--until", "data"]) == 0
    out = capsys.readouterr().out
    assert "data: finished in an earlier run, but out of date" in out and "changed since" in out
    (root / "pcd0001cpos.txt").write_text("1 2\n3 4\n5\n")  # a broken label: the stage fails, naming the file
    assert main(["tiny", "--work", str(work), "--set", f"data={root}", "--until", "data"]) == 1
    assert "pcd0001cpos.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo-model", "--work", str(work), "--set", f"data={root}"])
    assert "demo-model is judged on fresh synthetic scenes" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # its records would change the root's listing: every run would start over
        main(["tiny", "--work", str(root / "run"), "--set", f"data={root}", "--dry-run"])
    assert "lies inside data=" in capsys.readouterr().err
    assert config_for("tiny", environ={"DATA": str(root)}).data == ""  # a shell's DATA picks nothing
    relative = os.path.relpath(root)
    assert config_for("tiny", [f"data={relative}"], environ={}).data == str(root.resolve())


@pytest.mark.slow
def test_the_tiny_pipeline_trains_end_to_end_on_a_cornell_root_of_ones_own(tmp_path):
    """``--set data=ROOT``: every stage, tokenizer to evaluation, on a Cornell-format root (no scenes, no
    instructions), at the smallest sizes."""
    from training.datasets.toy import write_toy_dataset

    root = write_toy_dataset(tmp_path / "mine", images=24, seed=3, objects=3)  # 19 training images: a micro-batch
    sets = ["vision_steps=2", "language_steps=2", "align_steps=2", "ground_steps=2", "lora_steps=2", "augment=1",
            "eval_limit=2", f"data={root}"]  # fmt: skip
    work = tmp_path / "w"
    assert main(["tiny", "--work", str(work), *(a for x in sets for a in ("--set", x))]) == 0
    evaluation = json.loads((work / "eval.json").read_text())
    assert evaluation["n"] >= 1 and len(evaluation["answers"]) == evaluation["n"]
    record = json.loads((work / "stages.json").read_text())
    assert set(record) == {s.name for s in tiny_stages(config_for("tiny", sets, environ={}), work)[0]}
    assert not (work / "data").exists() and (work / "data.json").is_file()


def test_the_base_and_language_stages_read_the_corpus(tmp_path):
    from training.reasoning.corpus import fingerprint

    reads = {s.name: s.reads for s in tiny_stages(PipelineConfig(), tmp_path)[0] if s.reads}
    assert reads == {"base": ("corpus",), "language": ("corpus",)}
    assert Runner.fingerprint(tiny_stages(PipelineConfig(), tmp_path)[0][1]) == f"corpus md5 {fingerprint()}"


def test_a_failing_stage_stops_the_run_says_why_and_runs_again_next_time(tmp_path):
    runner = Runner(tmp_path, echo=lambda line: None)
    stages = [stage("a", tmp_path), stage("b", tmp_path, "fail"), stage("c", tmp_path)]
    with pytest.raises(PipelineError) as failed:
        runner.run(stages)
    message = str(failed.value)
    assert "stage b failed (exit code 3)" in message and "something went wrong" in message
    assert not (tmp_path / "c.txt").exists() and "b" not in json.loads((tmp_path / "stages.json").read_text())
    rows = runner.run([stages[0], stage("b", tmp_path), stages[2]])  # fixed: b runs, and c after it
    assert [r["skipped"] for r in rows] == [True, False, False]


def test_a_stage_that_writes_nothing_is_a_failure(tmp_path):
    with pytest.raises(PipelineError, match="without writing"):
        Runner(tmp_path, echo=lambda line: None).run([stage("a", tmp_path, "nothing")])


def test_sizes_come_from_the_preset_then_the_environment_then_set():
    assert config_for("tiny", environ={}) == PipelineConfig()
    demo = config_for("demo-model", environ={})
    assert (demo.ground_steps, demo.lora_steps, demo.lr) == (1600, 600, 1e-3)
    c = config_for("demo-model", ["lora_steps=5", "crop="], environ={"VISION_STEPS": "7", "LORA_STEPS": "9"})
    assert (c.vision_steps, c.lora_steps, c.crop, c.ground_steps) == (7, 5, None, 1600)
    with pytest.raises(ValueError, match="name=value"):
        config_for("tiny", ["steps=3"], environ={})
    assert [config_for("demo-model", [f"presence={v}"], environ={}).presence for v in ("1", "off", "True", "0")] == [
        True,
        False,
        True,
        False,
    ]
    with pytest.raises(ValueError, match="--set ground_steps=lots: expected a whole number"):
        config_for("tiny", ["ground_steps=lots"], environ={})
    with pytest.raises(ValueError, match="^GROUND_STEPS=lots: expected a whole number"):
        config_for("tiny", environ={"GROUND_STEPS": "lots"})
    with pytest.raises(ValueError, match="presence=maybe"):
        config_for("tiny", ["presence=maybe"], environ={})


def test_the_tiny_table_follows_its_config(tmp_path):
    names = [s.name for s in tiny_stages(PipelineConfig(), tmp_path)[0]]
    assert names == ["data", "base", "vision", "language", "describe", "align", "rt-data", "tune", "merge", "evaluate"]
    stages, final = tiny_stages(PipelineConfig(ground_steps=10, strategy="decoder", lora_steps=20), tmp_path)
    assert "ground" in [s.name for s in stages] and "merge" not in [s.name for s in stages]
    assert final == "tune/checkpoint-000020" and f"{tmp_path}/ground/checkpoint-000010" in stages[-2].args


def test_dry_run_lists_the_stages(tmp_path, capsys):
    assert main(["demo-model", "--work", str(tmp_path), "--dry-run", "--set", "test_images=5"]) == 0
    out = capsys.readouterr().out
    assert "quantize: python -m export.quantize --bits 4" in out and "--images 5" in out
    quantize = next(line for line in out.splitlines() if line.startswith("quantize:"))
    assert "--heads" not in quantize  # the presence check is opt-in
    assert main(["demo-model", "--work", str(tmp_path), "--dry-run", "--set", "presence=1"]) == 0
    quantize = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("quantize:"))
    assert f"--heads {tmp_path}/vision/checkpoint-" in quantize  # with it: the vision stage's heads
    assert "--target-check" not in quantize and "--min-patches" not in quantize
    assert main(["demo-model", "--work", str(tmp_path), "--dry-run", "--set", "target_check=1"]) == 0
    quantize = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("quantize:"))
    assert f"--heads {tmp_path}/vision/checkpoint-" in quantize and "--target-check" in quantize
    assert "--min-patches 0" in quantize  # the target check alone: the presence gate it carries never refuses
    assert (
        main(["demo-model", "--work", str(tmp_path), "--dry-run", "--set", "target_check=1", "--set", "presence=1"])
        == 0
    )
    quantize = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("quantize:"))
    assert "--target-check" in quantize and "--min-patches" not in quantize and "--target-pose" not in quantize
    assert (
        main(
            [
                "demo-model",
                "--work",
                str(tmp_path),
                "--dry-run",
                "--set",
                "target_check=1",
                "--set",
                "target_pose=heads",
            ]
        )
        == 0
    )
    quantize = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("quantize:"))
    assert quantize.endswith("--target-pose heads")
    assert main(["demo-model", "--work", str(tmp_path), "--dry-run", "--set", "target_check=1", "--set", "part_check=1",
                 "--set", "part_steps=50", "--set", "seed=3"]) == 0  # fmt: skip
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": python -m " in line)
    names = list(lines)
    assert names.index("evaluate") < names.index("parts") == names.index("quantize") - 1  # after the training stages
    assert lines["parts"] == (
        f"python -m training.parts --model {tmp_path}/vision/checkpoint-004000 --data {tmp_path}/data --out "
        f"{tmp_path}/parts --steps 50 --crop 320 --seed 3"
    )
    assert lines["quantize"].endswith(f"--parts {tmp_path}/parts")
    with pytest.raises(ValueError, match="part_check needs target_check=1"):
        config_for("demo-model", ["part_check=1"], environ={})
    with pytest.raises(ValueError, match="part_steps must be >= 1"):
        config_for("demo-model", ["target_check=1", "part_check=1", "part_steps=0"], environ={})
    with pytest.raises(ValueError, match="target_check needs a model trained to refuse"):
        config_for("tiny", ["target_check=1"], environ={})
    with pytest.raises(ValueError, match="target_pose needs target_check=1"):
        config_for("demo-model", ["target_pose=heads"], environ={})
    with pytest.raises(ValueError, match="target_pose must be one of model, heads"):
        config_for("demo-model", ["target_check=1", "target_pose=cnn"], environ={})
    with pytest.raises(SystemExit):
        main(["tiny", "--work", str(tmp_path), "--set", "bogus=1"])
    assert main(["tiny", "--work", str(tmp_path), "--dry-run", "--until", "ground", "--set", "ground_task=locate",
                 "--set", "ground_steps=10"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "ground: python -m training.train --strategy decoder" in out and "tune:" not in out
    with pytest.raises(SystemExit):
        main(["tiny", "--work", str(tmp_path), "--dry-run", "--until", "grounds"])
    assert "the tiny stages are data, base" in capsys.readouterr().err


def test_from_starts_a_build_at_a_stage_taking_the_earlier_ones_as_done(tmp_path, capsys):
    """A build split over machines: trained elsewhere up to merge, quantized and evaluated here."""
    assert main(["demo-model", "--work", str(tmp_path), "--dry-run", "--from", "quantize"]) == 0
    listed = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed[0] == "quantize" and "merge" not in listed and "eval-torch-clutter" in listed
    assert main(["demo-model", "--work", str(tmp_path), "--dry-run", "--from", "vision", "--until", "align"]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()[1:]] == [
        "vision",
        "language",
        "describe",
        "align",
    ]
    for bad, match in (
        (["--from", "quantise"], "--from 'quantise'"),
        (["--from", "tune", "--until", "align"], "no stage"),
    ):
        with pytest.raises(SystemExit):
            main(["demo-model", "--work", str(tmp_path), "--dry-run", *bad])
        assert match in capsys.readouterr().err


def test_skip_leaves_named_stages_out_taking_them_as_done(tmp_path, capsys):
    """scripts/device_build: the vision, language and align stages trained here, the rest on a GPU machine."""
    args = ["demo-model", "--work", str(tmp_path), "--dry-run", "--until", "evaluate"]
    assert main([*args, "--skip", "base,vision", "--skip", "language,align,evaluate"]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()[1:]] == [
        "data",
        "describe",
        "ground-data",
        "ground",
        "rt-data",
        "tune",
        "merge",
    ]
    for bad, match in (
        (["--skip", "vison"], "--skip 'vison'"),
        (["--from", "evaluate", "--skip", "evaluate"], "every stage is skipped"),
    ):
        with pytest.raises(SystemExit):
            main([*args, *bad])
        assert match in capsys.readouterr().err


def test_a_build_taken_up_from_a_stage_runs_from_there_and_logs_what_it_took_as_done(tmp_path):
    """--from on a real run: the stage before it is not run (its output is not even there); the log says so."""
    work = tmp_path / "w"
    (work / "merged").mkdir(parents=True)  # what a GPU machine would have brought back
    code = main(["tiny", "--work", str(work), "--from", "evaluate", "--set", "eval_limit=1"])
    log = (work / "pipeline.log").read_text()
    assert "== taken as done (--from evaluate): data, base, vision" in log
    assert "== data:" not in log and "== evaluate: python -m training.evaluate" in log
    assert code == 1  # an empty merged folder is no model: the stage itself says so
    assert not (work / "recipe.json").exists()  # stages made elsewhere: this run knows nothing of their recipe


def test_the_demo_model_trains_on_scenes_with_follow_ups_and_is_judged_on_fresh_ones(tmp_path):
    """[N]: scenes of 1-5 objects, follow-ups over several rounds in both answer stages, refusals, and fresh
    single and cluttered test sets in the test phrasings with the build's own CNN heads as baseline."""
    from training.pipeline import demo_model_stages

    stages = {s.name: s.command for s in demo_model_stages(config_for("demo-model", environ={}), tmp_path)}
    assert "--objects 1-5" in stages["data"]
    assert (
        "--refine-fraction 0.7 --refine-rounds 3" in stages["rt-data"] and "--absent-fraction 0.15" in stages["rt-data"]
    )
    assert "--refine-fraction 0.5" in stages["ground-data"]
    assert "--objects 1-1 --phrasing test" in stages["test-single"]
    assert "--objects 2-5 --phrasing test" in stages["test-clutter"]
    assert (
        "--refine" in stages["eval-q4-clutter"]
        and f"--cnn {tmp_path}/vision/checkpoint-004000" in stages["eval-q4-clutter"]
    )
    assert "--limit 100" in stages["evaluate"]
    # new objects: a library of the set's own, not the training library in new scenes; the bundle alone judged
    assert "--seed 3 --objects 2-5 --phrasing test" in stages["test-new-objects"]
    assert "--scene-seed" not in stages["test-new-objects"] and "--scene-seed 2" in stages["test-clutter"]
    assert "--cnn" in stages["eval-q4-new-objects"] and "eval-torch-new-objects" not in stages
    assert "--instances" not in stages["data"] + stages["test-clutter"]  # 8, synth's default: the commands stand
    more = {s.name: s.command for s in demo_model_stages(config_for("demo-model", ["instances=64"], {}), tmp_path)}
    assert "--instances 64" in more["data"] and "--seed 0 --instances 64 --scene-seed 1" in more["test-single"]
    assert "--instances" not in more["test-new-objects"]
    with pytest.raises(ValueError, match="instances must be >= 1"):
        config_for("demo-model", ["instances=0"], {})
    with pytest.raises(ValueError, match="means nothing with data"):
        PipelineConfig(data=str(tmp_path), instances=16)
    tiny = {s.name: s.command for s in tiny_stages(PipelineConfig(), tmp_path)[0]}
    assert "--objects" not in tiny["data"] and "--refine-fraction 0.1 " in tiny["rt-data"] + " "


def test_a_locate_ground_stage_trains_points_without_pose_validation(tmp_path):
    """[O]'s neutral base: the ground stage answers where the object's parts lie, in no row's format."""
    c = config_for("demo-model", ["ground_task=locate"], environ={})
    stages = {s.name: s.command for s in tiny_stages(c, tmp_path)[0]}
    assert "--task locate" in stages["ground-data"] and "--refine-fraction" not in stages["ground-data"]
    assert "--eval-every" not in stages["ground"] and "--steps 1600" in stages["ground"]
    assert (
        "--eval-every"
        in {s.name: s.command for s in tiny_stages(config_for("demo-model", environ={}), tmp_path)[0]}["ground"]
    )
    with pytest.raises(ValueError, match="ground_task"):
        config_for("demo-model", ["ground_task=points"], environ={})


def test_the_prompt_order_reaches_every_stage_that_writes_records(tmp_path):
    c = config_for("demo-model", ["prompt_order=instruction"], environ={})
    stages = {s.name: s.command for s in tiny_stages(c, tmp_path)[0]}
    built = [name for name, command in stages.items() if "training.build_dataset" in command]
    assert set(built) == {"describe", "ground-data", "rt-data"}
    assert all("--prompt-order instruction" in stages[name] for name in built)
    plain = {s.name: s.command for s in tiny_stages(config_for("demo-model", environ={}), tmp_path)[0]}
    assert not any("--prompt-order" in command for command in plain.values())  # image-first: the old commands
    with pytest.raises(ValueError, match="prompt_order"):
        config_for("demo-model", ["prompt_order=sideways"], environ={})


def test_attend_reaches_the_stages_that_train_answers(tmp_path):
    c = config_for("tiny", ["attend=0.5", "ground_steps=10", "attend_from=turn"], environ={})
    stages = {s.name: s.command for s in tiny_stages(c, tmp_path)[0]}
    taught = {name for name, command in stages.items() if "--attend 0.5 --attend-from turn" in command}
    assert taught == {"ground", "tune"}
    with pytest.raises(ValueError, match="attend_from"):
        config_for("tiny", ["attend_from=everywhere"], environ={})
    with pytest.raises(ValueError, match="attend must be"):
        config_for("tiny", ["attend=-1"], environ={})
    locate = config_for("tiny", ["attend=0.5", "ground_steps=10", "ground_task=locate"], environ={})
    stages = {s.name: s.command for s in tiny_stages(locate, tmp_path)[0]}
    assert "--attend" not in stages["ground"] and "--attend 0.5" in stages["tune"]  # points: nothing to look at
    plain = {s.name: s.command for s in tiny_stages(config_for("tiny", environ={}), tmp_path)[0]}
    assert not any("--attend" in command for command in plain.values())


def test_knowledge_lines_reach_the_stages_that_train_answers(tmp_path):
    c = config_for("tiny", ["knowledge=0.25", "ground_steps=10"], environ={})
    stages = {s.name: s.command for s in tiny_stages(c, tmp_path)[0]}
    assert {name for name, command in stages.items() if "--knowledge 0.25" in command} == {"ground", "tune"}
    plain = {s.name: s.command for s in tiny_stages(config_for("tiny", ["ground_steps=10"], environ={}), tmp_path)[0]}
    assert not any("--knowledge" in command for command in plain.values())  # 0: the commands as they were
    with pytest.raises(ValueError, match="knowledge is a share"):
        config_for("tiny", ["knowledge=1"], environ={})


def test_hints_reach_the_records_of_the_stages_that_train_answers(tmp_path):
    c = config_for("tiny", ["hints=yes", "ground_steps=10"], environ={})
    stages = {s.name: s.command for s in tiny_stages(c, tmp_path)[0]}
    assert {name for name, command in stages.items() if "--hints" in command} == {"ground-data", "rt-data"}
    plain = {s.name: s.command for s in tiny_stages(config_for("tiny", ["ground_steps=10"], environ={}), tmp_path)[0]}
    assert not any("--hints" in command for command in plain.values())
    masked = config_for("tiny", ["hints=yes", "hint_masking=0.5", "ground_steps=10"], environ={})
    stages = {s.name: s.command for s in tiny_stages(masked, tmp_path)[0]}
    assert {n for n, command in stages.items() if "--hint-masking 0.5 --hints" in command} == {"ground-data", "rt-data"}
    with pytest.raises(ValueError, match="hint_masking needs hints"):
        config_for("tiny", ["hint_masking=0.5"], environ={})
    demo = config_for("demo-model", environ={})
    assert demo.hints and demo.hint_masking == 0.5  # chosen on the probe's validation set


def test_the_ground_batch_and_loader_processes_reach_their_stages(tmp_path):
    c = config_for("tiny", ["ground_steps=10", "ground_batch=64", "workers=6"], environ={})
    stages = {s.name: s for s in tiny_stages(c, tmp_path)[0]}
    assert "--batch-size 64 --micro-batch 32" in stages["ground"].command
    assert "--batch-size 32" in stages["tune"].command and "--batch-size 32" in stages["vision"].command
    trained = {name for name, s in stages.items() if s.module == "training.train"}
    imaging = {name for name, s in stages.items() if s.module in ("training.synth", "training.build_dataset")}
    loaded = {name for name, s in stages.items() if s.speed[:2] == ("--workers", "6")}  # (then ground's passes)
    assert loaded - imaging == trained - {"language"} == {"vision", "align", "ground", "tune"}
    assert imaging <= loaded and imaging == {"data", "describe", "ground-data", "rt-data"}
    plain = {s.name: s for s in tiny_stages(config_for("tiny", ["ground_steps=10"], environ={}), tmp_path)[0]}
    assert not any("--workers" in s.speed for s in plain.values() if s.module == "training.train")
    # no loaders: the image stages use every core
    assert all(plain[name].speed == ("--workers", str(os.cpu_count())) for name in imaging)
    assert "--batch-size 32 --micro-batch 32" in plain["ground"].command
    # how fast a stage runs is not what it makes: a build continued with loaders reruns nothing
    slow = {
        s.name: s
        for s in tiny_stages(config_for("tiny", ["ground_steps=10", "ground_batch=64"], environ={}), tmp_path)[0]
    }
    assert all(stages[name].command == slow[name].command for name in stages)
    for bad, match in (
        ("ground_batch=48", "ground_batch"),
        ("ground_batch=0", "ground_batch"),
        ("workers=-1", "workers"),
    ):
        with pytest.raises(ValueError, match=match):
            config_for("tiny", [bad], environ={})


def test_speed_arguments_reach_the_stage_but_not_its_command(tmp_path):
    runner = Runner(tmp_path, echo=lambda line: None)
    plain = stage("a", tmp_path)
    runner.run([plain])
    fast = Stage("a", MODULE, plain.args, plain.outputs, speed=("quick",))
    assert fast.command == plain.command and runner.run([fast])[0]["skipped"]
    (tmp_path / "a.txt").unlink()
    runner.run([fast])
    assert (tmp_path / "a.txt").read_text().endswith("quick")


def test_a_training_stage_cut_short_goes_on_from_its_checkpoints_when_nothing_before_it_ran(tmp_path):
    runner = Runner(tmp_path, echo=lambda line: None)
    out, folder, cut = tmp_path / "t.txt", tmp_path / "t", tmp_path / "t.txt.fail"
    train = Stage("t", MODULE, (str(out),), (str(out),), resumes="t")
    stages = [stage("a", tmp_path), train]
    (folder / "checkpoint-000009").mkdir(parents=True)  # an earlier build's
    cut.touch()
    with pytest.raises(PipelineError):
        runner.run(stages)
    assert not (folder / "checkpoint-000009").exists()  # a run that starts over clears what an earlier one left
    started = json.loads((tmp_path / "started.json").read_text())
    assert set(started) == {"t"} and started["t"]["command"] == train.command and started["t"]["reads"] == ""
    (folder / "checkpoint-000005").mkdir()  # the snapshot the run cut short left
    cut.unlink()
    assert [r["skipped"] for r in runner.run(stages)] == [True, False]
    assert out.read_text().endswith("--resume") and (folder / "checkpoint-000005").is_dir()
    assert "t: python -m tests.training.pipeline_stage" in (tmp_path / "pipeline.log").read_text()
    assert "(going on from where a run cut it short)" in (tmp_path / "pipeline.log").read_text()
    log = (tmp_path / "logs" / "t.log").read_text()  # the run cut short's lines stay, the resumed run's follow
    assert log.count("$ python -m") == 2 and "something went wrong" in log and log.rstrip().endswith("a long log line")
    assert json.loads((tmp_path / "started.json").read_text()) == {}  # finished: nothing to go on from
    assert json.loads((tmp_path / "stages.json").read_text())["t"]["command"] == train.command  # without --resume
    out.unlink()  # finished once, its output gone: it starts over
    runner.run(stages)
    assert not out.read_text().endswith("--resume") and not (folder / "checkpoint-000005").exists()
    cut.touch()
    out.unlink()
    with pytest.raises(PipelineError):
        runner.run(stages)
    cut.unlink()
    (folder / "checkpoint-000003").mkdir()
    # a stage before it ran again (its command changed): what the run cut short learned from is stale
    assert [r["skipped"] for r in runner.run([stage("a", tmp_path, "extra"), train])] == [False, False]
    assert not out.read_text().endswith("--resume") and not (folder / "checkpoint-000003").exists()
    # ... also when it ran in another run (--until a), the stage cut short being taken up in a third
    cut.touch()
    out.unlink()
    with pytest.raises(PipelineError):
        runner.run([stage("a", tmp_path, "extra"), train])
    cut.unlink()
    (folder / "checkpoint-000004").mkdir()
    assert [r["skipped"] for r in runner.run([stage("a", tmp_path)])] == [False]
    assert [r["skipped"] for r in runner.run([stage("a", tmp_path), train])] == [True, False]
    assert not out.read_text().endswith("--resume") and not (folder / "checkpoint-000004").exists()


def test_every_training_stage_can_go_on_from_a_run_cut_short(tmp_path):
    stages = tiny_stages(config_for("demo-model", environ={}), tmp_path)[0]
    assert {s.name: s.resumes for s in stages if s.resumes} == {
        s.name: s.name for s in stages if s.module == "training.train"
    }
    assert {s.name for s in stages if s.resumes} >= {"vision", "language", "align", "ground", "tune"}


def test_the_stages_that_train_answers_run_micro_batches_in_passes_of_like_length_unless_told_not_to(tmp_path):
    stages = tiny_stages(config_for("demo-model", environ={}), tmp_path)[0]
    assert {s.name for s in stages if "--length-split" in s.speed} == {"ground", "tune"}
    assert [s.speed[s.speed.index("--length-split") + 1] for s in stages if "--length-split" in s.speed] == ["4"] * 2
    whole = tiny_stages(config_for("demo-model", ["length_split=1"], environ={}), tmp_path)[0]
    assert not any("--length-split" in s.speed for s in whole)
    # how fast, not what: a build that changes it takes its finished stages as done
    assert [s.command for s in whole] == [s.command for s in stages]
    with pytest.raises(ValueError, match="length_split must be >= 1"):
        config_for("demo-model", ["length_split=0"], environ={})


def test_a_second_build_seeds_every_stage_but_the_scenes_and_the_first_keeps_its_commands(tmp_path, capsys):
    """``--set seed=1``: the model card's seed spread comes from a build whose own draws differ (initial weights,
    record sampling, batches) on the same training scenes and test sets; seed 0 adds nothing, so the stages a
    finished build recorded still match and are skipped."""
    from training.pipeline import main

    def commands(*sets):
        args = [a for s in sets for a in ("--set", s)]
        assert main(["demo-model", "--work", str(tmp_path), "--dry-run", *args]) == 0
        lines = [line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": python -m " in line]
        return dict(lines)

    plain, second = commands(), commands("seed=1")
    assert set(plain) == set(second)
    from training.pipeline import config_for

    assert config_for("demo-model", [], environ={"SEED": "7"}).seed == 0  # a shell's SEED is not the build's
    for name, command in second.items():
        seeded = name in ("base", "vision", "language", "describe", "align", "ground-data", "ground", "rt-data", "tune")
        assert command.endswith(" --seed 1") == seeded, name
        assert ("--seed 1" in command) == seeded, name
        assert command.replace(" --seed 1", "") == plain[name], name
        assert "--seed" not in plain[name] or name.startswith(("data", "test-")), name  # seed 0: as before


def test_the_demo_model_script_runs_the_recipe_that_built_the_bundled_model(tmp_path):
    """scripts/build_demo_model is the bundled model's recipe (models/rtgrasp-tiny/README.md says the same command
    with its --set values): the checks in the bundle, the whole decoder tuned, the 64-instance library and 8,000 vision
    steps, the test sets of seeds 8201-8203."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "build_demo_model"
    out = subprocess.run(
        ["bash", str(script), str(tmp_path / "w"), "--dry-run", "--set", "test_images=7"],
        capture_output=True,
        text=True,
        env={**os.environ, "PY": sys.executable},
        check=True,
    ).stdout
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": python -m " in line)
    assert "--heads" in lines["quantize"] and "--target-check --target-pose heads" in lines["quantize"]
    assert "--min-patches" not in lines["quantize"]  # the presence check refuses
    assert lines["quantize"].endswith(f"--parts {tmp_path}/w/parts") and "--steps 300" in lines["parts"]
    assert "--strategy decoder" in lines["tune"] and "--batch-size 64" in lines["ground"]
    assert "--scene-seed 8201" in lines["test-single"] and "--scene-seed 8202" in lines["test-clutter"]
    assert "--seed 8203 " in lines["test-new-objects"]
    assert "--instances 64" in lines["data"] and "--instances 64" in lines["test-clutter"]  # the 64-instance library
    assert "--steps 8000" in lines["vision"]
    assert "--images 7" in lines["test-single"]  # a later --set wins
    assert not (tmp_path / "w").exists()  # a dry run writes nothing
