import json

from training.model_card import main, read_stages


def test_the_card_states_what_the_run_logged(tmp_path):
    work, bundle = tmp_path / "work", tmp_path / "bundle"
    work.mkdir()
    bundle.mkdir()
    (bundle / "llm.gguf").write_bytes(b"x" * 2_000_000)
    (work / "pipeline.log").write_text(
        "== data: python -m training.synth --out w/data --images 2000 --seed 0\nrendered\n== data took 216 s\n"
        "== vision: python -m training.train --strategy vision\n== vision took 10 s\n"  # crashed run, redone below
        "== data: finished in an earlier run, skipped\n"
        "== vision: python -m training.train --strategy vision --steps 1500\n== vision took 693 s\n"
        "== tune: python -m training.train --strategy lora\n"  # never finished
    )
    for runtime, accuracy in (("q4", 0.5), ("torch", 0.55)):
        for test_set in ("single", "clutter"):
            summary = {
                "accuracy": accuracy,
                "part_accuracy": 0.4,
                "target_rate": 0.93,
                "n": 200,
                "parse_failure_rate": 0.0,
                "category_accuracy": 0.99,
                "category_by_kind": {"function": 0.95, "attribute": 0.85},
                "hint_by_kind": {"function": {"hinted": 1.0, "right": 0.98}, "name": {"hinted": 0.0, "right": 0.0}},
                "refused_absent": 0.97,
                "refused_present": 0.01,
                "refinement_by_kind": {
                    "rotate": {"n": 40, "success": 0.9, "model_alone": 0.7, "repeat": 0.0, "rule": 0.6}
                },
                "target_check": {"moved": 0.25, "model_alone": {"accuracy": 0.4, "part_accuracy": 0.3, "target_rate": 0.45}},
                "baselines": {"cnn": {"accuracy": 0.3, "part_accuracy": 0.2, "target_rate": 0.5},
                              "cnn-told": {"accuracy": 0.7, "part_accuracy": 0.6, "target_rate": 0.8},
                              "cnn-words": {"accuracy": 0.6, "part_accuracy": 0.5, "target_rate": 0.7},
                              "floor": {"error": "no depth"}},
                "answers": [],
            }  # fmt: skip
            (work / f"eval-{runtime}-{test_set}.json").write_text(json.dumps(summary))
    new = {"accuracy": 0.3, "part_accuracy": 0.25, "target_rate": 0.6, "n": 150}  # new objects: the bundle alone
    (work / "eval-q4-new-objects.json").write_text(json.dumps(new))
    other = tmp_path / "other"
    other.mkdir()
    (other / "eval-q4-clutter.json").write_text(json.dumps({"target_rate": 0.81, "n": 200}))
    assert main(["--work", str(work), "--out", str(bundle), "--also", str(other)]) == 0
    readme = (bundle / "README.md").read_text()
    assert "| vision | 693 | `python -m training.train --strategy vision --steps 1500` |" in readme
    assert "| data | 216 |" in readme and "| tune |" not in readme
    assert "Bundle size: 2.0 MB" in readme and "15.2 min" in readme
    assert "| **model (Q4)** | 50.0 % / – |" in readme and "| | model (torch fp32) | 55.0 % |" in readme
    assert "| | cnn (instruction-blind) | 30.0 % | 20.0 % | 50.0 % |" in readme and "| | floor |" not in readme
    assert (
        "| | model (Q4) as it wrote its poses (the target check moved 25.0 % / – of the parsed answers) | 40.0 % / – | 30.0 % / – | 45.0 % / – |"
        in readme
    )
    rows = [line for line in readme.splitlines() if line.startswith("| | cnn")]  # in this order, errors left out
    assert [row.split(" | ")[1] for row in rows[:3]] == [
        "cnn (instruction-blind)",
        "cnn told what the instruction's words name (a rule)",
        "cnn told the category (an upper bound, not a baseline)",
    ]
    assert "| | cnn told the category (an upper bound, not a baseline) | 70.0 % | 60.0 % | 80.0 % |" in readme
    assert "| target rate | clutter | 93.0 % / 81.0 % | ≥ 90.0 % | yes |" in readme  # two builds' spread
    assert "| lead over the CNN heads in target rate | clutter | 43.0 % / – | ≥ 30.0 % | yes |" in readme
    assert "| category named right, attribute instructions | clutter | 85.0 % / – | ≥ 90.0 % | no |" in readme
    assert "| refusals of present objects | clutter | 1.0 % / – | ≤ 2.0 % | yes |" in readme
    assert "| clutter | rotate | 40 | 90.0 % / – | 70.0 % | 0.0 % | 60.0 % |" in readme
    new_objects = readme.split("| 2–5 new objects (instances no training image showed), test phrasings, 150 requests |")
    assert len(new_objects) == 2 and new_objects[1].startswith(
        " **model (Q4)** | 30.0 % / – | 25.0 % / – | 60.0 % / – |"
    )
    assert "model (torch fp32)" not in new_objects[1].split("## Refinement")[0]  # no torch evaluation of that set
    assert "| function | 100.0 % | 98.0 % | 95.0 % |" in readme and "| name | 0.0 % | 0.0 % | – |" in readme
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert (
        metrics["metrics"]["torch"]["clutter"]["accuracy"] == 0.55
        and "answers" not in metrics["metrics"]["q4"]["single"]
    )
    assert metrics["other_build"]["q4"]["clutter"]["target_rate"] == 0.81


def test_the_card_needs_a_finished_run(tmp_path, capsys):
    assert main(["--work", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "scripts/build_demo_model" in capsys.readouterr().err
    (tmp_path / "pipeline.log").write_text("")
    assert read_stages(tmp_path / "pipeline.log") == []
    assert main(["--work", str(tmp_path), "--out", str(tmp_path)]) == 2


def test_a_build_split_over_machines_says_which_ran_what(tmp_path):
    """scripts/device_build: training on a GPU machine, the rest here; the card names both and how to rebuild."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "pipeline.log").write_text(
        "== machine: 16 CPU cores, NVIDIA H100 80GB HBM3\n"
        "== vision: python -m training.train --strategy vision\n== vision took 120 s\n"
        "== tune: python -m training.train --strategy decoder --steps 600\n== tune took 60 s\n"
        "== taken as done (--from quantize): data, base, vision, tune\n"
        "== machine: 2 CPU cores\n"
        "== quantize: python -m export.quantize --bits 4\n== quantize took 30 s\n"
    )
    (work / "eval-q4-clutter.json").write_text(json.dumps({"target_rate": 0.9, "n": 10}))
    assert main(["--work", str(work), "--out", str(tmp_path)]) == 0
    readme = (tmp_path / "README.md").read_text()
    assert "3.5 min of stage time (3.0 min on 16 CPU cores, NVIDIA H100 80GB HBM3; 0.5 min on 2 CPU cores)" in readme
    assert (
        "| tune | 60 | `python -m training.train --strategy decoder --steps 600` | 16 CPU cores, NVIDIA H100" in readme
    )
    assert "| quantize | 30 | `python -m export.quantize --bits 4` | 2 CPU cores |" in readme
    assert "bash scripts/device_build train" in readme and "scripts/build_demo_model" not in readme
    assert "new objects" not in readme.split("## Accuracy")[1]  # a build without that test set: no empty row
    assert "with the whole decoder tuned on" in readme
    stages = json.loads((tmp_path / "metrics.json").read_text())["stages"]
    assert [s["machine"] for s in stages] == ["16 CPU cores, NVIDIA H100 80GB HBM3"] * 2 + ["2 CPU cores"]


def test_the_card_says_the_command_and_sets_that_built_it(tmp_path):
    """A build made with ``--set`` values (or the environment) is rebuilt only with them: the pipeline records them
    in ``recipe.json`` and the card gives the whole command; a run without a recipe keeps the script's line."""
    from training.pipeline import RECIPE_FILE, config_for, recipe_sets

    sets = ["ground_batch=64", "attend=1.0", "strategy=decoder", "target_check=1", "test_seed=8201", "workers=4"]
    config = config_for("demo-model", sets, environ={"VISION_STEPS": "3000"})
    recipe = recipe_sets("demo-model", config)
    assert recipe == [
        "vision_steps=3000",
        "ground_batch=64",
        "strategy=decoder",
        "target_check=1",
        "test_seed=8201",
        "attend=1.0",
    ]  # in the config's order; the loader processes only change the speed, and the environment's value is kept
    assert config_for("demo-model", recipe, environ={}) == config_for("demo-model", sets[:-1] + ["vision_steps=3000"])
    assert recipe_sets("demo-model", config_for("demo-model", [], environ={})) == []
    work, bundle = tmp_path / "work", tmp_path / "bundle"
    work.mkdir()
    bundle.mkdir()
    (work / "pipeline.log").write_text("== data: python -m training.synth --out w/data\n== data took 5 s\n")
    (work / "eval-q4-clutter.json").write_text(json.dumps({"target_rate": 0.8, "n": 10}))
    assert main(["--work", str(work), "--out", str(bundle)]) == 0
    assert f"scripts/build_demo_model {work}" in (bundle / "README.md").read_text()
    (work / RECIPE_FILE).write_text(json.dumps({"pipeline": "demo-model", "set": recipe}))
    assert main(["--work", str(work), "--out", str(bundle)]) == 0
    readme = (bundle / "README.md").read_text()
    want = f"python -m training.pipeline demo-model --work {work} --set vision_steps=3000 --set ground_batch=64"
    assert want in readme and "--set attend=1.0   # writes that folder" in readme
    assert "scripts/build_demo_model" not in readme
