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
        for test_set in ("seen", "unseen"):
            summary = {
                "accuracy": accuracy,
                "n": 200,
                "parse_failure_rate": 0.0,
                "category_accuracy": 0.99,
                "answers": [],
            }
            (work / f"eval-{runtime}-{test_set}.json").write_text(json.dumps(summary))
    assert main(["--work", str(work), "--out", str(bundle)]) == 0
    readme = (bundle / "README.md").read_text()
    assert "| vision | 693 | `python -m training.train --strategy vision --steps 1500` |" in readme
    assert "| data | 216 |" in readme and "| tune |" not in readme
    assert "Bundle size: 2.0 MB" in readme and "15.2 min" in readme
    assert "| 50.0 % | 55.0 % |" in readme
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert (
        metrics["metrics"]["torch"]["unseen"]["accuracy"] == 0.55 and "answers" not in metrics["metrics"]["q4"]["seen"]
    )


def test_the_card_needs_a_finished_run(tmp_path, capsys):
    assert main(["--work", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "scripts/build_demo_model" in capsys.readouterr().err
    (tmp_path / "pipeline.log").write_text("")
    assert read_stages(tmp_path / "pipeline.log") == []
    assert main(["--work", str(tmp_path), "--out", str(tmp_path)]) == 2
