"""Supervised attention on the tiny LLaVA: the targets per position, the loss, and a few real steps that teach it."""

import csv
import json

import pytest

torch = pytest.importorskip("torch")

from appliance.answer import AnswerFormat  # noqa: E402
from appliance.grasp import GraspPose  # noqa: E402
from training.attend import (  # noqa: E402
    NO_TARGET,
    AttentionTap,
    answer_patches,
    default_layers,
    grid_side,
    neighbourhoods,
    patch_of,
)
from training.build_dataset import BuildConfig, build  # noqa: E402
from training.data import IGNORE, ConversationDataset, collate  # noqa: E402
from training.datasets import open_dataset  # noqa: E402
from training.datasets.toy import write_toy_dataset  # noqa: E402
from training.model import TinyConfig, build_tiny, load_llava  # noqa: E402
from training.train import TrainConfig, train  # noqa: E402
from training.view import ModelView  # noqa: E402


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("attend")
    toy = open_dataset(write_toy_dataset(root / "toy", images=8, seed=3, objects=6))
    config = BuildConfig(variant="rt", decimals=2, size=224, refine_fraction=0.5, seed=1)
    build(toy, "all", 0, config, root / "rt", progress=False)
    model, processor = build_tiny(TinyConfig())
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    return root


def test_patches_and_their_neighbourhoods():
    assert grid_side(64) == 8
    with pytest.raises(ValueError, match="square"):
        grid_side(50)
    assert patch_of(0.0, 0.0, 8) == 0
    assert patch_of(0.99, 0.0, 8) == 7  # x runs along a row
    assert patch_of(0.0, 0.99, 8) == 56  # y down the rows
    assert patch_of(1.0, 1.0, 8) == 63  # the far edge stays inside
    near = neighbourhoods(8)
    assert near[0].sum() == 4 and near[9].sum() == 9 and near[9, 0] == 1 and near[9, 27] == 0
    assert default_layers(4) == (2, 3) and default_layers(32) == tuple(range(16, 32))


def test_each_answer_gives_its_own_patch_and_a_refusal_none():
    fmt = AnswerFormat("nr-a", decimals=2, refusals=True)
    turns = [
        {"from": "human", "value": "<image>\nGrasp the mug."},
        {"from": "gpt", "value": "[0.10, 0.90], 0.50"},
        {"from": "human", "value": "the other one"},
        {"from": "gpt", "value": "[0.60, 0.20], -0.30"},
        {"from": "human", "value": "the kettle"},
        {"from": "gpt", "value": fmt.render_refusal("kettle")},
    ]
    assert answer_patches(turns, fmt, 8) == [patch_of(0.1, 0.9, 8), patch_of(0.6, 0.2, 8), NO_TARGET]


def test_the_position_before_each_answer_token_looks_at_that_answers_patch(workdir):
    model, processor = load_llava(workdir / "base")
    fmt = ModelView.load(workdir / "rt").answer_format
    ds = ConversationDataset(
        workdir / "rt" / "train.json", processor, model.config.image_token_index, 64, attend=(fmt, 8, "answer")
    )
    i = next(k for k, r in enumerate(ds.records) if len(r["conversations"]) >= 4)
    item = ds[i]
    patches = answer_patches(ds.records[i]["conversations"], fmt, 8)
    assert len(set(patches)) >= 1 and NO_TARGET not in patches
    labelled = [k for k, label in enumerate(item["labels"]) if label != IGNORE]
    targets = [k for k, t in enumerate(item["attend"]) if t != NO_TARGET]
    assert targets == [k - 1 for k in labelled]  # exactly the queries that predict an answer token
    assert item["attend"][labelled[0] - 1] == patches[0]  # "ASSISTANT:" looks at the first answer's patch
    assert item["attend"][targets[-1]] == patches[-1]  # the last answer's </s> comes from its own query
    ds.attend = (fmt, 8, "turn")
    turn = ds[i]["attend"]
    image_end = max(k for k, t in enumerate(item["input_ids"]) if t == model.config.image_token_index)
    asked = [k for k, t in enumerate(turn) if t != NO_TARGET and k not in targets]
    assert asked and all(k > image_end for k in asked)  # the question's words after the image, none before it
    assert [t for k, t in enumerate(turn) if k in targets] == [item["attend"][k] for k in targets]
    first_question = [k for k in asked if k < labelled[0]]
    assert first_question and {turn[k] for k in first_question} == {patches[0]}
    batch = collate([item, ds[0]], processor.tokenizer.pad_token_id)
    assert batch["attend"].shape == batch["input_ids"].shape
    assert (batch["attend"][batch["attention_mask"] == 0] == NO_TARGET).all()


def attend_loss_on(checkpoint, workdir) -> float:
    """The unweighted attention loss of ``checkpoint`` on the first records (eager attention)."""
    model, processor = load_llava(checkpoint)
    model.set_attn_implementation("eager")
    model.eval()
    fmt = ModelView.load(workdir / "rt").answer_format
    ds = ConversationDataset(
        workdir / "rt" / "train.json", processor, model.config.image_token_index, 64, attend=(fmt, 8, "answer")
    )
    batch = collate([ds[k] for k in range(4)], processor.tokenizer.pad_token_id)
    targets = batch.pop("attend")
    with AttentionTap(model, (2, 3)) as tap, torch.no_grad():
        model(**batch)
        return tap.loss(batch["input_ids"], targets, model.config.image_token_index, 8).item()


def test_training_with_attend_moves_the_heads_onto_the_target(workdir):
    def run(name, weight):
        config = TrainConfig(
            str(workdir / "base"),
            str(workdir / "rt"),
            str(workdir / name),
            "decoder",
            steps=12,
            batch_size=4,
            micro_batch=4,
            lr=3e-3,
            warmup=1,
            save_every=12,
            attend=weight,
        )
        return train(config, progress=False)

    before = attend_loss_on(workdir / "base", workdir)
    taught = attend_loss_on(run("taught", 1.0), workdir)
    plain = attend_loss_on(run("plain", 0.0), workdir)
    assert taught < 0.7 * before and taught < 0.7 * plain, (before, taught, plain)
    rows = list(csv.DictReader((workdir / "taught" / "metrics.csv").open()))
    assert all(float(r["attend_loss"]) > 0 for r in rows)
    assert all(r["attend_loss"] == "" for r in csv.DictReader((workdir / "plain" / "metrics.csv").open()))
    config = json.loads((workdir / "taught" / "checkpoint-000012" / "train_config.json").read_text())
    assert config["attend"] == 1.0


def test_attend_on_answers_without_poses_is_an_error_not_a_silent_zero(workdir):
    toy = open_dataset(workdir / "toy")
    build(toy, "all", 0, BuildConfig(size=224, task="describe", seed=1), workdir / "describe", progress=False)
    paths = (str(workdir / "base"), str(workdir / "describe"), str(workdir / "d"))
    config = TrainConfig(*paths, "align", steps=1, batch_size=2, micro_batch=2, attend=1.0)
    with pytest.raises(ValueError, match="none of the first records"):
        train(config, progress=False)


def test_the_tap_keeps_nothing_while_inactive(workdir):
    model, processor = load_llava(workdir / "base")
    model.set_attn_implementation({"text_config": "eager"})
    ids = torch.full((1, 70), 5)
    ids[0, 2:66] = model.config.image_token_index
    with AttentionTap(model, (2, 3)) as tap, torch.no_grad():
        tap.active = False
        model(input_ids=ids, pixel_values=torch.zeros(1, 3, 224, 224))
        assert tap.weights == {}
        tap.active = True
        model(input_ids=ids, pixel_values=torch.zeros(1, 3, 224, 224))
        assert set(tap.weights) == {2, 3} and tap.weights[2].shape == (1, 70, 70)
        assert tap.weights[2]._base is None  # a copy of head 0, not a view holding every head


def test_the_tap_needs_eager_attention_and_real_layers(workdir):
    model, processor = load_llava(workdir / "base")
    model.set_attn_implementation("sdpa")
    with pytest.raises(ValueError, match="layers \\[9\\]"):
        AttentionTap(model, (2, 9))
    ids = torch.full((1, 70), 5)
    ids[0, 2:66] = model.config.image_token_index
    with AttentionTap(model, (2,)), pytest.raises(RuntimeError, match="eager"):
        model(input_ids=ids, pixel_values=torch.zeros(1, 3, 224, 224))


def test_attend_is_checked():
    with pytest.raises(ValueError, match="attend must be >= 0"):
        TrainConfig("m", "d", "o", "decoder", attend=-1)
    with pytest.raises(ValueError, match="vision stage has none"):
        TrainConfig("m", "d", "o", "vision", attend=1)


def test_selectivity_measures_each_head_on_pairs_of_instructions(workdir, tmp_path, capsys):
    from training.attend import main, selectivity

    data = tmp_path / "pairs"
    (data / "images").mkdir(parents=True)
    source = json.loads((workdir / "rt" / "train.json").read_text())[0]
    image = (workdir / "rt" / source["image"]).read_bytes()
    (data / "images" / "a.png").write_bytes(image)
    (ModelView.load(workdir / "rt")).save(data / "view.json")
    fmt = ModelView.load(data).answer_format

    def record(i, kind, x, y):
        reasoning = "The object is a mug." if fmt.variant.value == "rt" else ""
        answer = fmt.render(GraspPose(x, y, 0.1), reasoning)
        turns = [{"from": "human", "value": f"<image>\nGrasp thing {i}."}, {"from": "gpt", "value": answer}]
        return {"id": str(i), "image": "images/a.png", "kind": kind, "conversations": turns}

    (data / "test.json").write_text(json.dumps([record(0, "name", 0.1, 0.1), record(1, "spatial", 0.9, 0.9)]))
    model, processor = load_llava(workdir / "base")
    model.set_attn_implementation("eager")
    ds = ConversationDataset(
        data / "test.json", processor, model.config.image_token_index, 64, attend=(fmt, 8, "answer")
    )
    result = selectivity(model, processor, ds, images=10)
    pairs, stats = result["all"]
    assert pairs == 2 and result["name"][0] == 1 and result["spatial"][0] == 1
    assert stats.shape == (3, 4, 4)  # own, other, own wins × layers × heads
    assert ((stats >= 0) & (stats <= 1)).all() and (stats[0] + stats[1] <= 1 + 1e-6).all()
    assert main(["--model", str(workdir / "base"), "--data", str(data)]) == 0
    assert "2 pairs; the most selective head" in capsys.readouterr().out
    assert main(["--model", str(workdir / "base"), "--data", str(tmp_path / "nowhere")]) == 2
    assert "error:" in capsys.readouterr().err


class _Recorder:
    """An optimizer that keeps the gradients it was handed (train_step clips none: it is given no parameters)."""

    param_groups = [{}]

    def __init__(self, params):
        self.params, self.grads = params, None

    def step(self):
        self.grads = [p.grad.clone() for p in self.params]

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


@pytest.mark.parametrize("split", [2, 3])
def test_a_micro_batch_run_in_passes_of_like_length_has_the_gradient_of_one_pass(workdir, split):
    """The records sorted by length and run in passes, each trimmed to its longest: the language and attention
    losses and every gradient are those of the whole micro-batch in one pass."""
    from training.attend import SupervisedAttention
    from training.train import Ranks, train_step, trainable_model

    model, processor = load_llava(workdir / "base")
    model.set_attn_implementation({"text_config": "eager"})
    model = trainable_model(model, "decoder")
    params = [p for p in model.parameters() if p.requires_grad]
    fmt = ModelView.load(workdir / "rt").answer_format
    ds = ConversationDataset(
        workdir / "rt" / "train.json", processor, model.config.image_token_index, 64, attend=(fmt, 8, "turn")
    )
    batch = collate([ds[k] for k in range(7)], processor.tokenizer.pad_token_id)
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 2  # records of several lengths (follow-ups)
    tap = SupervisedAttention(model, model.config, 1.0)
    results = {}
    for passes in (1, split):
        recorder = _Recorder(params)
        loss, attend = train_step(model, recorder, [], iter([batch]), 0.0, 1, Ranks(), "cpu", tap, passes)
        results[passes] = (loss, attend, recorder.grads)
    (loss, attend, grads), (split_loss, split_attend, split_grads) = results[1], results[split]
    assert split_loss == pytest.approx(loss, rel=1e-5) and split_attend == pytest.approx(attend, rel=1e-5)
    assert attend > 0
    for whole, parts in zip(grads, split_grads, strict=True):
        torch.testing.assert_close(parts, whole, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("passes", "accumulate"), [(1, 1), (2, 2)])
def test_knowledge_lines_mixed_into_a_step_add_their_share_of_the_gradient(workdir, passes, accumulate):
    """--knowledge 0.25: the step's gradient is 0.75 x the answers' + 0.25 x that of the knowledge lines drawn,
    read as the language stage reads them (in passes of like length and over micro-batches too); the loss
    reported is the answers' alone."""
    from training.train import Ranks, knowledge_lines_loss, train_step, trainable_model

    model, processor = load_llava(workdir / "base")
    model = trainable_model(model, "decoder")
    params = [p for p in model.parameters() if p.requires_grad]
    ds = ConversationDataset(workdir / "rt" / "train.json", processor, model.config.image_token_index, 64)
    micro = [collate([ds[k] for k in range(4 * i, 4 * i + 4)], processor.tokenizer.pad_token_id) for i in range(2)]

    def step(knowledge):
        recorder = _Recorder(params)
        stream = iter(micro[:accumulate])
        loss, _ = train_step(model, recorder, [], stream, 0.0, accumulate, Ranks(), "cpu", None, passes, knowledge)
        return loss, recorder.grads

    answers_loss, answers = step(None)
    mixed_loss, mixed = step((0.25, knowledge_lines_loss(processor, 3, 5, "cpu")))
    model.zero_grad(set_to_none=True)
    knowledge_lines_loss(processor, 3, 5, "cpu")(model).backward()  # the same seed: the same five lines
    lines = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]  # the projector: none
    assert mixed_loss == pytest.approx(answers_loss, rel=1e-6)
    assert any((a != 0).any() for a in answers) and any((k != 0).any() for k in lines)
    for m, a, k in zip(mixed, answers, lines, strict=True):
        torch.testing.assert_close(m, 0.75 * a + 0.25 * k, rtol=1e-4, atol=1e-6)


def test_knowledge_lines_are_the_corpus_facts_read_as_text(workdir):
    from types import SimpleNamespace

    from training.reasoning import load_templates
    from training.reasoning.corpus import knowledge_lines
    from training.train import TrainConfig, knowledge_lines_loss

    texts = []

    def runner(input_ids, attention_mask, labels):
        texts.extend(processor.tokenizer.batch_decode(input_ids, skip_special_tokens=True))
        assert (labels[attention_mask == 0] == -100).all()
        return SimpleNamespace(loss=torch.zeros(()))

    _, processor = load_llava(workdir / "base")
    knowledge_lines_loss(processor, 0, 6, "cpu")(runner)
    facts = set(knowledge_lines(list(load_templates().categories.values())))
    assert len(texts) == 6 and all(t.strip() in facts for t in texts), texts
    for bad in (-0.1, 0.6):
        with pytest.raises(ValueError, match="knowledge is a share"):
            TrainConfig("m", "d", "o", knowledge=bad)
    for strategy in ("language", "pretrain", "align", "vision"):  # the lines would train nothing there
        with pytest.raises(ValueError, match=f"knowledge: the lines train the decoder, which the {strategy}"):
            TrainConfig("m", "d", "o", strategy=strategy, knowledge=0.25)
    assert TrainConfig("m", "d", "o", strategy="decoder", knowledge=0.5).knowledge == 0.5


def test_length_parts_put_like_lengths_together_longest_first():
    from training.train import TrainConfig, length_parts

    assert length_parts([5, 9, 1, 7, 3], 2) == [[1, 3, 0], [4, 2]]
    assert length_parts([4, 4], 3) == [[0], [1]]  # no empty pass
    with pytest.raises(ValueError, match="length_split must be >= 1"):
        TrainConfig("m", "d", "o", length_split=0)
    with pytest.raises(ValueError, match="length_split: the vision stage"):
        TrainConfig("m", "d", "o", strategy="vision", length_split=4)
