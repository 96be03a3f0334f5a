"""Offline evaluation of a bundle: the same metric, through the appliance's runtime, as the torch model."""

import json

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("torch")

from training.datasets import open_dataset  # noqa: E402
from training.datasets.toy import write_toy_dataset  # noqa: E402
from training.evaluate import MAX_NEW_TOKENS, bundle_answerer, bundle_view, evaluate, main, torch_answerer  # noqa: E402


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), images=4, seed=7, objects=3)


def test_f32_bundle_answers_exactly_as_the_torch_model(f32_bundle, tiny_spm_checkpoint, toy):
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel
    from training.model import load_llava
    from training.view import ModelView

    dataset = open_dataset(toy)
    ids = list(dataset.ids)[:3]
    model, processor = load_llava(tiny_spm_checkpoint)
    view = ModelView.load(tiny_spm_checkpoint)
    grasp_model = GraspModel.load(f32_bundle, llama=LlamaSettings.exact(n_ctx=512))
    assert bundle_view(grasp_model.manifest) == view
    by_torch = evaluate(torch_answerer(model, processor), view, dataset, ids)
    by_bundle = evaluate(
        bundle_answerer(grasp_model, constrain=False, max_new_tokens=MAX_NEW_TOKENS), view, dataset, ids
    )
    assert [r["answer"] for r in by_bundle.rows] == [r["answer"] for r in by_torch.rows]
    assert [r["tokens"] for r in by_bundle.rows] == [r["tokens"] for r in by_torch.rows]
    grasp_model.llm.close()


def test_cli_scores_a_bundle(f32_bundle, toy, tmp_path):
    out = tmp_path / "eval.json"
    args = [
        "--bundle",
        str(f32_bundle),
        "--root",
        str(toy),
        "--split",
        "all",
        "--limit",
        "2",
        "--json",
        str(out),
        "--vis",
        str(tmp_path / "vis"),
    ]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 2 and 0 <= report["accuracy"] <= 1 and report["ms_per_image"] > 0
    assert all(r["timings"]["vision_ms"] > 0 for r in report["answers"])
    # the baselines on the same two images, beneath the model's figures
    assert report["baselines"]["oracle"]["accuracy"] == 1.0 and report["baselines"]["oracle"]["n"] == 2
    assert 0 <= report["baselines"]["floor"]["accuracy"] <= 1 and "cnn" not in report["baselines"]
    assert len(list((tmp_path / "vis").glob("*.png"))) == 2


def test_cli_errors(tmp_path, toy, capsys):
    assert main(["--bundle", str(tmp_path), "--root", str(toy), "--split", "all"]) == 2
    assert "not a bundle" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--bundle", str(tmp_path), "--model", str(tmp_path), "--root", str(toy)])


def test_refinement_turns_follow_up_in_the_same_conversation(nra_bundle, toy):
    """--refine: one follow-up per answered image where its picture allows one, in the image's conversation (the
    grammar makes every answer of the random NR-A model parse)."""
    from appliance.runtime.model import GraspModel

    dataset = open_dataset(toy)
    ids = list(dataset.ids)[:3]
    grasp_model = GraspModel.load(nra_bundle)
    answerer = bundle_answerer(grasp_model)
    result = evaluate(answerer, bundle_view(grasp_model.manifest), dataset, ids, refine=True)
    assert len(answerer._session.turns) == 2  # the last image's follow-up continued its conversation
    turns = [r["refinement"] for r in result.rows if r.get("refinement")]
    assert turns and all(t["kind"] in ("rotate", "side", "part") and t["request"] and t["parsed"] for t in turns)
    summary = result.summary()
    assert summary["refinement_turns"] == len(turns)
    assert summary["refinement_success"] <= min(summary["refinement_satisfied"], summary["refinement_correct"])
    again = evaluate(bundle_answerer(grasp_model), bundle_view(grasp_model.manifest), dataset, ids, refine=True)
    requests = lambda rows: [(r.get("refinement") or {}).get("request") for r in rows]  # noqa: E731
    assert requests(again.rows) == requests(result.rows)  # seeded per image
    assert all(k["model_alone"] == k["success"] and k["moved"] == 0 for k in summary["refinement_by_kind"].values())
    rotations = evaluate(bundle_answerer(grasp_model), bundle_view(grasp_model.manifest), dataset, ids, refine=True,
                         refine_kinds=("rotate",))  # fmt: skip
    kinds = [r["refinement"]["kind"] for r in rotations.rows if r.get("refinement")]
    assert kinds and set(kinds) == {"rotate"}
    grasp_model.llm.close()


def test_refinement_kinds_are_checked(nra_bundle, toy, capsys):
    args = ["--bundle", str(nra_bundle), "--root", str(toy), "--split", "all"]
    for bad, message in (
        (["--refine-kinds", "part"], "--refine-kinds needs --refine"),
        (["--refine", "--refine-kinds", "part,spin"], "unknown kind 'spin'"),
    ):
        with pytest.raises(SystemExit):
            main(args + bad)
        assert message in capsys.readouterr().err


def test_torch_follow_up_continues_the_training_conversation_format(tiny_spm_checkpoint, toy):
    from training.evaluate import answer
    from training.model import load_llava

    model, processor = load_llava(tiny_spm_checkpoint)
    answerer = torch_answerer(model, processor)
    from training.datasets.augment import center_crop

    dataset = open_dataset(toy)
    view = center_crop(dataset.load(next(iter(dataset.ids)), with_depth=False), None, (224, 224)).image
    first, _, _ = answerer(view, view, "pick up the mug")
    second = answerer.follow_up("turn the gripper by 90 degrees")
    prompt = f"USER: <image>\npick up the mug ASSISTANT: {first}</s> USER: turn the gripper by 90 degrees ASSISTANT:"
    assert second == answer(model, processor, view, "", prompt=prompt)[0]
    assert [t["from"] for t in answerer._turns] == ["human", "gpt", "human", "gpt"]


def test_an_instruction_first_model_is_prompted_the_same_way_by_torch_and_by_its_bundle(
    tiny_spm_checkpoint, toy, tmp_path
):
    import shutil

    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel
    from export.quantize import build_bundle
    from training.model import load_llava
    from training.view import ModelView

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_spm_checkpoint, checkpoint)
    view = ModelView(variant="nr-a", decimals=3, size=224, crop=320, prompt_order="instruction")
    view.save(checkpoint / "view.json")
    build_bundle(checkpoint, tmp_path / "bundle", bits=32, progress=False)
    grasp_model = GraspModel.load(tmp_path / "bundle", llama=LlamaSettings.exact(n_ctx=512))
    assert grasp_model.manifest.prompt_template == "USER: {instruction}\n<image> ASSISTANT:"
    assert bundle_view(grasp_model.manifest) == view
    segments = grasp_model.prompt_segments("pick up the mug", first=True)
    assert segments.index(None) > len(segments) // 2  # the image after the instruction's tokens
    dataset = open_dataset(toy)
    ids = list(dataset.ids)[:2]
    model, processor = load_llava(checkpoint)
    by_torch = evaluate(torch_answerer(model, processor, view), view, dataset, ids)
    by_image_first = evaluate(torch_answerer(model, processor), view, dataset, ids)
    by_bundle = evaluate(
        bundle_answerer(grasp_model, constrain=False, max_new_tokens=MAX_NEW_TOKENS), view, dataset, ids
    )
    assert [r["answer"] for r in by_bundle.rows] == [r["answer"] for r in by_torch.rows]
    assert [r["answer"] for r in by_image_first.rows] != [r["answer"] for r in by_torch.rows]  # the order matters
    grasp_model.llm.close()
