"""Table I's bench on a toy dataset: every cell runs the real commands, the table says what they measured."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from bench.paper_tables import main  # noqa: E402
from training.datasets.toy import write_toy_dataset  # noqa: E402


@pytest.mark.slow
def test_every_cell_is_trained_evaluated_and_tabulated(tiny_spm_checkpoint, tmp_path, capsys):
    root = write_toy_dataset(tmp_path / "toy", images=10, seed=2, objects=5)
    argv = [
        "--base",
        str(tiny_spm_checkpoint),
        "--root",
        str(root),
        "--out",
        str(tmp_path / "t1"),
        "--variants",
        "nr-a",
        "--splits",
        "iw",
        "--folds",
        "0,1",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--micro-batch",
        "2",
        "--limit",
        "2",
        "--augment",
        "0",
        "--crop",
        "0",
    ]
    assert main(argv) == 0
    data = json.loads((tmp_path / "t1" / "table1.json").read_text())
    assert sorted(data["cells"]) == ["iw0-nr-a-lora", "iw0-nr-a-pretrain", "iw1-nr-a-lora", "iw1-nr-a-pretrain"]
    assert all(c["n"] == 2 and 0 <= c["accuracy"] <= 1 for c in data["cells"].values())
    table = (tmp_path / "t1" / "table1.md").read_text()
    accs = [100 * data["cells"][f"iw{k}-nr-a-lora"]["accuracy"] for k in (0, 1)]
    mean = sum(accs) / 2
    assert f"| NR-A | LoRA + projector | {mean:.1f} ± " in table and "2 steps × batch 2" in table
    log = (tmp_path / "t1" / "pipeline.log").read_text()  # the pipeline runner's: a line per stage start and end
    assert log.count(": python -m training.train") == 4 and log.count(": python -m training.merge") == 2
    assert len(list((tmp_path / "t1" / "logs").glob("train-*.log"))) == 4  # each stage's whole log kept
    capsys.readouterr()
    # a second run finds every stage finished and runs none
    assert main(argv) == 0
    again = (tmp_path / "t1" / "pipeline.log").read_text()[len(log) :]
    assert again.count("finished in an earlier run, skipped") == 14 and " took " not in again


def test_bad_arguments_are_refused(tiny_spm_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "--base",
                str(tiny_spm_checkpoint),
                "--root",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--variants",
                "rt,xx",
            ]
        )
    assert "rt, nr-a, nr-b" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--base", str(tmp_path / "none"), "--root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "does not exist" in capsys.readouterr().err
