"""Reasoning tuning on the tiny LLaVA: masking, a few real steps of each strategy, resume."""

import csv
import json
import shutil
from contextlib import closing
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from training import train as train_module  # noqa: E402
from training.build_dataset import BuildConfig, build  # noqa: E402
from training.data import IGNORE, ConversationDataset, encode  # noqa: E402
from training.datasets import open_dataset  # noqa: E402
from training.datasets.toy import write_toy_dataset  # noqa: E402
from training.model import TinyConfig, build_tiny, load_llava  # noqa: E402
from training.train import (  # noqa: E402
    SNAPSHOT_MARK,
    MetricsLog,
    Saves,
    TrainConfig,
    batches,
    lr_at,
    micro_batch_indices,
    train,
)

from .helpers import changed_parts  # noqa: E402


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    toy = open_dataset(write_toy_dataset(root / "toy", images=12, seed=2, objects=6))
    build(
        toy,
        "all",
        0,
        BuildConfig(variant="rt", decimals=2, size=224, refine_fraction=0.5, seed=1),
        root / "rt",
        progress=False,
    )
    model, processor = build_tiny(TinyConfig())
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    return root


def test_labels_cover_exactly_the_answers(workdir):
    model, processor = load_llava(workdir / "base")
    records = json.loads((workdir / "rt" / "train.json").read_text())
    record = next(r for r in records if "refinement" in r)
    ids, labels = encode(record, processor.tokenizer, model.config.image_token_index, 64, 512)
    assert ids.count(model.config.image_token_index) == 64
    answers = [t["value"] for t in record["conversations"] if t["from"] == "gpt"]
    target = processor.tokenizer.decode([t for t in labels if t != IGNORE])
    assert target.replace(" ", "") == "".join(a + "</s>" for a in answers).replace(" ", "")
    assert labels[: ids.index(model.config.image_token_index) + 64] == [IGNORE] * (
        ids.index(model.config.image_token_index) + 64
    )
    with pytest.raises(ValueError, match="exceed max_length"):
        encode(record, processor.tokenizer, model.config.image_token_index, 64, 50)


def read_losses(out):
    with open(out / "metrics.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def test_lora_loss_falls_and_training_resumes(workdir):
    out = workdir / "lora"
    config = TrainConfig(
        str(workdir / "base"),
        str(workdir / "rt"),
        str(out),
        "lora",
        steps=6,
        batch_size=4,
        micro_batch=2,
        lr=2e-3,
        warmup=1,
        save_every=3,
    )
    last = train(config, progress=False)
    assert last.name == "checkpoint-000006" and (last / "adapter_model.safetensors").is_file()
    losses = read_losses(out)
    assert len(losses) == 6 and losses[-1] < losses[0]
    longer = TrainConfig(**{**config.__dict__, "steps": 8})
    train(longer, resume=True, progress=False)
    assert len(read_losses(out)) == 8
    assert (out / "checkpoint-000008").is_dir()
    other = TrainConfig(**{**config.__dict__, "steps": 10, "lr": 1e-3})  # another run's settings: not its sequel
    with pytest.raises(ValueError, match=r"other settings \(lr 0.002 → 0.001\)"):
        train(other, resume=True, progress=False)
    saved = out / "checkpoint-000008" / "train_config.json"  # as a run from before the setting would have saved it
    saved.write_text(json.dumps({k: v for k, v in json.loads(saved.read_text()).items() if k != "attend"}))
    looking = TrainConfig(**{**config.__dict__, "steps": 10, "attend": 0.5})  # that run had the default, 0
    with pytest.raises(ValueError, match=r"other settings \(attend 0.0 → 0.5\)"):
        train(looking, resume=True, progress=False)


def test_saves_keep_every_save_every_steps_and_snapshot_by_the_clock_keeping_only_the_newest(tmp_path):
    now = [0.0]
    config = TrainConfig("m", "d", str(tmp_path), steps=10, save_every=4, snapshot_minutes=5)
    (tmp_path / "checkpoint-000009").mkdir()  # an earlier run's snapshot: a run that does not resume removes it
    (tmp_path / "checkpoint-000009" / SNAPSHOT_MARK).touch()
    (tmp_path / "checkpoint-000008").mkdir()  # and keeps what that run kept
    Saves(config, tmp_path, resumed=True, clock=lambda: now[0])  # a resumed run keeps it: it goes on from there
    assert (tmp_path / "checkpoint-000009").is_dir()
    saves = Saves(config, tmp_path, clock=lambda: now[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000008"]
    shutil.rmtree(tmp_path / "checkpoint-000008")
    assert [saves.due(step) for step in (1, 2, 3)] == [None, None, None]
    now[0] = 301.0
    assert saves.due(3) == "snapshot" and saves.due(4) == "keep" and saves.due(10) == "keep"

    def save(step, kind):  # as save_checkpoint leaves it
        (tmp_path / f"checkpoint-{step:06d}").mkdir()
        if kind == "snapshot":
            (tmp_path / f"checkpoint-{step:06d}" / SNAPSHOT_MARK).touch()
        saves.saved(tmp_path / f"checkpoint-{step:06d}")

    save(3, "snapshot")
    assert saves.due(5) is None  # the clock starts again at every save
    save(4, "keep")  # a save removes the snapshots before it
    now[0] = 700.0
    save(6, "snapshot")
    now[0] = 1100.0
    save(7, "snapshot")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000004", "checkpoint-000007"]
    assert (tmp_path / "checkpoint-000007" / SNAPSHOT_MARK).is_file()
    save(10, "keep")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000004", "checkpoint-000010"]
    never = Saves(TrainConfig("m", "d", str(tmp_path), steps=10, save_every=4, snapshot_minutes=0), tmp_path, True)
    assert never.due(3) is None
    with pytest.raises(ValueError, match="snapshot_minutes"):
        TrainConfig("m", "d", "o", snapshot_minutes=-1)


def test_a_resumed_metrics_log_drops_the_steps_it_takes_again(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path, enabled=True)
    for step in (1, 2, 3):
        log.write(step, 1.0 / step, 1e-3)
    log.close()
    resumed = MetricsLog(path, enabled=True, start=2)
    resumed.write(3, 0.25, 1e-3)
    resumed.close()
    rows = list(csv.DictReader(path.open()))
    assert [r["step"] for r in rows] == ["1", "2", "3"] and rows[-1]["loss"] == "0.25000"
    MetricsLog(path, enabled=True).close()  # a fresh run starts the file over
    assert path.read_text().splitlines() == [",".join(MetricsLog.HEADER)]


def test_a_run_cut_short_resumes_from_its_snapshot_and_leaves_only_what_it_keeps(workdir, tmp_path, monkeypatch):
    out = tmp_path / "cut"
    config = TrainConfig(
        str(workdir / "base"), str(workdir / "rt"), str(out), "pretrain", steps=4, batch_size=2, micro_batch=2,
        warmup=1, save_every=4, snapshot_minutes=1e-9,  # a snapshot at every step that keeps none
    )  # fmt: skip
    real = train_module.save_checkpoint

    def cut_at_3(out_, model, processor, optimizer, step, config_, heads=None, snapshot=False):
        if step == 3:
            raise KeyboardInterrupt("the machine went away")
        return real(out_, model, processor, optimizer, step, config_, heads, snapshot)

    monkeypatch.setattr(train_module, "save_checkpoint", cut_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-000002"]
    assert (out / "checkpoint-000002" / SNAPSHOT_MARK).is_file() and len(read_losses(out)) == 3
    monkeypatch.setattr(train_module, "save_checkpoint", real)
    assert train(config, resume=True, progress=False) == out / "checkpoint-000004"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-000004"]
    assert not (out / "checkpoint-000004" / SNAPSHOT_MARK).exists()
    with open(out / "metrics.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [1, 2, 3, 4]


@pytest.mark.parametrize("strategy", ["decoder", "lora"])
def test_a_resumed_run_starts_from_its_checkpoints_weights(workdir, tmp_path, monkeypatch, strategy):
    """Not the base's: the decoder strategy once loaded a checkpoint's weights by hand, under key names the model
    no longer had, and went on from the base without a word."""
    from training.train import trainable_model, weights_digest

    out = tmp_path / strategy
    config = TrainConfig(str(workdir / "base"), str(workdir / "rt"), str(out), strategy, steps=2, batch_size=2,
                         micro_batch=2, lr=2e-3, warmup=1, save_every=1)  # fmt: skip
    train(config, progress=False)
    shutil.rmtree(out / "checkpoint-000002")  # cut short after its first step
    seen = []
    real = train_module.train_step

    def spy(runner, *args, **kwargs):
        seen.append(weights_digest(runner))
        return real(runner, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", spy)
    train(config, resume=True, progress=False)
    if strategy == "lora":  # the base with the checkpoint's adapter (and projector) on it
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        expected = trainable_model(load_llava(workdir / "base")[0], strategy)
        set_peft_model_state_dict(expected, load_file(out / "checkpoint-000001" / "adapter_model.safetensors"))
        assert seen == [weights_digest(expected)]
    else:
        assert seen == [weights_digest(trainable_model(load_llava(out / "checkpoint-000001")[0], strategy))]
    if strategy == "decoder":  # what the broken resume went on from
        assert seen != [weights_digest(trainable_model(load_llava(workdir / "base")[0], strategy))]


def test_pretrain_trains_the_projector_only(workdir):
    out = workdir / "pretrain"
    before, _ = load_llava(workdir / "base")
    config = TrainConfig(
        str(workdir / "base"),
        str(workdir / "rt"),
        str(out),
        "pretrain",
        steps=2,
        batch_size=2,
        micro_batch=2,
        warmup=1,
        save_every=2,
    )
    last = train(config, progress=False)
    after, _ = load_llava(last)
    assert changed_parts(before, after) == {"multi_modal_projector"}
    # run again from the start into the same folder (a stage the pipeline runs again), after a save cut short
    (out / ".tmp-checkpoint-000002").mkdir()
    (out / ".tmp-checkpoint-000002" / "stale.bin").write_text("not this run's")
    (last / "earlier.txt").write_text("the first run's")
    assert train(config, progress=False) == last
    assert not (last / "earlier.txt").exists() and not (last / "stale.bin").exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_config_is_checked():
    with pytest.raises(ValueError, match="unknown strategy"):
        TrainConfig("m", "d", "o", "full")
    with pytest.raises(ValueError, match="multiple of micro_batch"):
        TrainConfig("m", "d", "o", batch_size=10, micro_batch=4)


def test_dataset_items_carry_pixels(workdir):
    model, processor = load_llava(workdir / "base")
    ds = ConversationDataset(workdir / "rt" / "train.json", processor, model.config.image_token_index, 64)
    item = ds[0]
    assert item["pixel_values"].shape == (3, 224, 224)
    assert len(item["input_ids"]) == len(item["labels"])


def test_mixed_data_finds_each_record_image_beside_its_own_json(workdir, tmp_path):
    """--mix: another folder's records join, their images read from that folder, not from --data's."""
    import shutil

    model, processor = load_llava(workdir / "base")
    other = tmp_path / "other"
    shutil.copytree(workdir / "rt", other)
    records = json.loads((other / "train.json").read_text())[:3]
    (other / "train.json").write_text(json.dumps(records))
    first = ConversationDataset(workdir / "rt" / "train.json", processor, model.config.image_token_index, 64)
    for record in records:  # the images now live only in the other folder, under a new name
        moved = "images/mixed-" + Path(record["image"]).name
        if not (other / moved).exists():
            (other / record["image"]).rename(other / moved)
        record["image"] = moved
    (other / "train.json").write_text(json.dumps(records))
    ds = ConversationDataset(
        [workdir / "rt" / "train.json", other / "train.json"], processor, model.config.image_token_index, 64
    )
    assert len(ds) == len(first) + 3
    assert torch.equal(ds[len(first)]["pixel_values"], first[0]["pixel_values"])


def test_merged_model_equals_the_adapter_model(workdir):
    from peft import PeftModel

    from training.merge import merge
    from training.view import ModelView

    checkpoint = workdir / "lora" / "checkpoint-000006"
    if not checkpoint.is_dir():
        config = TrainConfig(
            str(workdir / "base"),
            str(workdir / "rt"),
            str(workdir / "lora"),
            "lora",
            steps=6,
            batch_size=4,
            micro_batch=2,
            lr=2e-3,
            warmup=1,
            save_every=6,
        )
        train(config, progress=False)
    merged_dir = merge(checkpoint, workdir / "merged")
    merged, processor = load_llava(merged_dir)
    base, _ = load_llava(workdir / "base")
    adapted = PeftModel.from_pretrained(base, checkpoint)
    ds = ConversationDataset(workdir / "rt" / "train.json", processor, merged.config.image_token_index, 64)
    from training.data import collate

    batch = collate([ds[0], ds[1]], processor.tokenizer.pad_token_id)
    batch.pop("labels")
    merged.eval()
    adapted.eval()
    with torch.no_grad():
        a, b = merged(**batch).logits, adapted(**batch).logits
    assert torch.allclose(a, b, atol=1e-4)
    fresh, _ = load_llava(workdir / "base")
    with torch.no_grad():
        assert not torch.allclose(a, fresh.eval()(**batch).logits, atol=1e-4)  # the adapter did change the model
    assert ModelView.load(merged_dir).decimals == 2


def test_the_category_an_answer_names_is_read_as_the_appliance_reads_it():
    from appliance.runtime.objects import CategoryNames
    from training.evaluate import stated_category

    names = CategoryNames({"block": "toy block", "toy block": "toy block", "mug": "mug", "orange": "orange"})
    assert stated_category("The object is a toy block with sides", names) == "toy block"
    assert stated_category("nothing here", names) is None
    assert stated_category("The orange one is a mug.", names) == "mug"  # a colour here
    assert stated_category("An orange is something to eat.", names) == "orange"


def test_evaluate_runs_end_to_end_and_counts_parse_failures(workdir, tmp_path):
    from training.evaluate import main as evaluate_main

    out = tmp_path / "eval.json"
    merged = workdir / "merged"
    if not merged.is_dir():
        pytest.skip("needs the merged model of the previous test")
    assert (
        evaluate_main(
            [
                "--model",
                str(merged),
                "--root",
                str(workdir / "toy"),
                "--split",
                "all",
                "--limit",
                "3",
                "--json",
                str(out),
                "--vis",
                str(tmp_path / "vis"),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["n"] == 3 and 0 <= report["accuracy"] <= 1 - report["parse_failure_rate"] + 1e-9
    assert len(report["answers"]) == 3 and all("answer" in r for r in report["answers"])
    assert len(list((tmp_path / "vis").glob("*.png"))) == 3


def test_two_gloo_processes_train_and_agree_on_the_weights(workdir):
    """torchrun with 2 CPU processes (gloo): DDP keeps the replicas identical."""
    import subprocess
    import sys

    out = workdir / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "training.train",
        "--model",
        str(workdir / "base"),
        "--data",
        str(workdir / "rt"),
        "--out",
        str(out),
        "--strategy",
        "lora",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--micro-batch",
        "2",
        "--save-every",
        "3",
        "--lr",
        "2e-3",
    ]
    run = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    )
    assert run.returncode == 0, run.stderr[-3000:]
    digests = {(out / f"weights-rank{r}.sha256").read_text() for r in (0, 1)}
    assert len(digests) == 1
    assert len(read_losses(out)) == 3
    assert (out / "checkpoint-000003" / "adapter_model.safetensors").is_file()


def test_validation_accuracy_is_logged(workdir):
    toy = open_dataset(workdir / "toy")
    build(toy, "iw", 0, BuildConfig(variant="rt", decimals=2, size=224, seed=1), workdir / "rt-iw", progress=False)
    out = workdir / "val"
    config = TrainConfig(
        str(workdir / "base"),
        str(workdir / "rt-iw"),
        str(out),
        "lora",
        steps=2,
        batch_size=2,
        micro_batch=2,
        warmup=1,
        save_every=2,
        eval_every=2,
        eval_images=2,
    )
    train(config, progress=False)
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["val_accuracy"] == "" and 0.0 <= float(rows[1]["val_accuracy"]) <= 1.0


def test_decoder_strategy_trains_projector_and_language_model_on_a_frozen_vit(workdir):
    out = workdir / "decoder"
    before, _ = load_llava(workdir / "base")
    config = TrainConfig(
        str(workdir / "base"),
        str(workdir / "rt"),
        str(out),
        "decoder",
        steps=2,
        batch_size=2,
        micro_batch=2,
        warmup=1,
        save_every=2,
    )
    after, _ = load_llava(train(config, progress=False))
    assert changed_parts(before, after) == {"multi_modal_projector", "language_model", "lm_head"}


def answer_loss(model, dataset, pixels_from) -> float:
    """Mean answer loss of the dataset's records, each shown the image of record ``pixels_from[i]``."""
    from training.data import collate

    items = [dataset[i] for i in range(len(dataset))]
    batch = collate(items, 0)
    batch["pixel_values"] = torch.stack([items[j]["pixel_values"] for j in pixels_from])
    with torch.no_grad():
        return model(**batch).loss.item()


def test_the_image_matters_after_training(workdir):
    """Two records with different images and answers: after a few steps, swapping the images makes the answers less likely."""
    records = json.loads((workdir / "rt" / "train.json").read_text())
    first = records[0]
    second = next(r for r in records if r["source"] != first["source"] and r["category"] != first["category"])
    data = workdir / "two"
    data.mkdir()
    pair = [{**r, "image": f"../rt/{r['image']}", "conversations": r["conversations"][:2]} for r in (first, second)]
    (data / "train.json").write_text(json.dumps(pair))
    config = TrainConfig(
        str(workdir / "base"),
        str(data),
        str(workdir / "two-out"),
        "decoder",
        steps=40,
        batch_size=2,
        micro_batch=2,
        lr=1e-3,
        warmup=2,
        save_every=40,
    )
    model, processor = load_llava(train(config, progress=False))
    model.eval()
    dataset = ConversationDataset(data / "train.json", processor, model.config.image_token_index, 64)
    right, swapped = answer_loss(model, dataset, [0, 1]), answer_loss(model, dataset, [1, 0])
    assert read_losses(workdir / "two-out")[-1] < read_losses(workdir / "two-out")[0]
    assert swapped > 1.2 * right, (right, swapped)  # answer loss per token: the answer depends on the image
    base, _ = load_llava(workdir / "base")
    untrained = answer_loss(base.eval(), dataset, [0, 1]), answer_loss(base, dataset, [1, 0])
    assert abs(untrained[1] - untrained[0]) < 0.1 * untrained[0]  # before training the image made no such difference


def test_data_smaller_than_one_micro_batch_is_an_error_not_an_endless_wait(workdir, capsys):
    from training.train import main

    records = len(json.loads((workdir / "rt" / "train.json").read_text()))
    argv = [
        "--strategy",
        "lora",
        "--model",
        str(workdir / "base"),
        "--data",
        str(workdir / "rt"),
        "--out",
        str(workdir / "too-small"),
        "--steps",
        "1",
        "--batch-size",
        str(records + 1),
        "--micro-batch",
        str(records + 1),
    ]
    assert main(argv) == 2
    assert f"holds {records} records, fewer than one micro-batch" in capsys.readouterr().err


def test_bfloat16_lora_with_gradient_checkpointing_takes_a_step(workdir, tmp_path):
    """The way a 7B model trains on a small machine: bfloat16 weights, activations recomputed; the step is real."""
    config = TrainConfig(
        str(workdir / "base"), str(workdir / "rt"), str(tmp_path / "bf16"), "lora", steps=2, batch_size=2,
        micro_batch=2, save_every=2, warmup=1, dtype="bfloat16", gradient_checkpointing=True,
    )  # fmt: skip
    last = train(config, progress=False)
    losses = read_losses(tmp_path / "bf16")
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    from safetensors.torch import load_file

    adapter = load_file(last / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at zero: it moved
    with pytest.raises(ValueError, match="dtype must be one of"):
        TrainConfig("m", "d", "o", dtype="float8")


def test_learning_curves_read_set_aside_training_images_never_the_test_fold(workdir):
    """[O]'s pilot: val.json holds training images set aside (scored like a test set); --eval-on val scores them."""
    toy = open_dataset(workdir / "toy")
    out = workdir / "rt-val"
    summary = build(toy, "iw", 0, BuildConfig(variant="nr-a", decimals=2, size=224, seed=1), out, progress=False,
                    validation=3)  # fmt: skip
    assert summary["splits"]["val"]["images"] == 3 and summary["splits"]["train"]["images"] == 12 - 3 - 3
    records = {name: json.loads((out / f"{name}.json").read_text()) for name in ("train", "val", "test")}
    sources = {name: {r["source"] for r in rs} for name, rs in records.items()}
    assert not sources["val"] & sources["train"] and not sources["val"] & sources["test"]
    assert all(len(r["grasps"]) >= 1 and "_v" not in r["image"] for r in records["val"])
    config = TrainConfig(str(workdir / "base"), str(out), str(workdir / "curve"), "pretrain", steps=2, batch_size=2,
                         micro_batch=2, warmup=0, save_every=2, eval_every=1, eval_images=2, eval_on="val")  # fmt: skip
    train(config, progress=False)
    rows = list(csv.DictReader((workdir / "curve" / "metrics.csv").open()))
    assert [r["val_accuracy"] != "" for r in rows] == [True, True]
    with pytest.raises(ValueError, match="--validation must be in 0..8"):
        build(toy, "iw", 0, BuildConfig(variant="nr-a"), workdir / "bad", progress=False, validation=9)


def test_warm_up_and_validation_file_are_checked():
    with pytest.raises(ValueError, match="warmup must be >= 0"):
        TrainConfig("m", "d", "o", warmup=-1)
    with pytest.raises(ValueError, match="workers must be >= 0"):
        TrainConfig("m", "d", "o", workers=-1)
    with pytest.raises(ValueError, match="language stage draws its batches in process"):
        TrainConfig("m", "d", "o", strategy="language", workers=2)
    TrainConfig("m", "d", "o", strategy="vision", workers=2)  # the vision stage takes loaders
    with pytest.raises(ValueError, match="eval_on"):
        TrainConfig("m", "d", "o", eval_on="train")
    config = TrainConfig("m", "d", "o", lr=1.0, steps=10, warmup=0)
    assert lr_at(0, config) == 1.0


def test_loader_processes_yield_the_same_micro_batches_in_the_same_order(workdir):
    model, processor = load_llava(workdir / "base")
    ds = ConversationDataset(workdir / "rt" / "train.json", processor, model.config.image_token_index, 64)
    per_epoch = len(ds) // 4
    n = per_epoch + 3  # across an epoch's end: the next epoch's shuffle too
    pad = processor.tokenizer.pad_token_id
    inline = batches(ds, 4, pad, seed=5, start_epoch=3)
    with closing(batches(ds, 4, pad, seed=5, start_epoch=3, workers=2)) as loaded:
        for _ in range(n):
            a, b = next(inline), next(loaded)
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]), key


def test_each_rank_gets_every_world_th_micro_batch_of_the_one_sequence_across_epochs():
    one = micro_batch_indices(10, 3, seed=1)  # 3 micro-batches an epoch, a record left over
    sequence = [next(one) for _ in range(12)]
    assert len(set(sum(sequence[:3], []))) == 9 and sequence[:3] != sequence[3:6]  # distinct; reshuffled
    ranks = [micro_batch_indices(10, 3, seed=1, rank=r, world=2) for r in (0, 1)]
    for k, chunk in enumerate(sequence):
        assert next(ranks[k % 2]) == chunk
    assert next(micro_batch_indices(10, 3, seed=1, start_epoch=1)) == sequence[3]
