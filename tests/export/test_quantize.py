"""python -m export.quantize: the bundle, its manifest and hashes, and clear errors on bad input."""

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

from appliance.bundle import read_bundle  # noqa: E402
from export.quantize import QUANTS, main  # noqa: E402


@pytest.fixture(scope="module")
def q4_bundle(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "rt-q4"
    assert main(["--bits", "4", "--model", str(tiny_checkpoint), "--out", str(out)]) == 0
    return out


def test_bundle_has_the_manifest_of_design_md(q4_bundle, tiny_checkpoint):
    manifest = read_bundle(q4_bundle)  # verifies every hash
    assert manifest.quant == "Q4_K_M" and manifest.llm == "llm-q4_k_m.gguf" and manifest.vision == "vision.onnx"
    assert sorted(p.name for p in q4_bundle.iterdir()) == [
        "drafts.txt",
        "llm-q4_k_m.gguf",
        "manifest.yaml",
        "speech.yaml",
        "vision.onnx",
    ]
    assert manifest.n_image_tokens == 64 and manifest.embedding_width == 256
    assert (manifest.answer.variant, manifest.answer.decimals) == ("rt", 2)
    assert manifest.image.size == 224 and manifest.image.crop == 320 and manifest.image.resample == "bicubic"
    assert manifest.tokenizer == tiny_checkpoint.name.split("-")[1].rstrip("0123456789")
    assert "<image>" in manifest.prompt_template and manifest.metrics["vision_relative_error"] <= 1e-4
    # the object vocabulary: every category of the templates by its name and synonyms, none for the fallback
    assert manifest.categories["coffee mug"] == "mug" and manifest.categories["mug"] == "mug"
    assert "object" not in manifest.categories and len(set(manifest.categories.values())) == 74


def test_quantized_file_type(q4_bundle):
    from gguf import GGUFReader

    field = GGUFReader(str(q4_bundle / "llm-q4_k_m.gguf")).fields["general.file_type"]
    assert field.parts[field.data[0]][0] == QUANTS[4][1]
    f32_size = 6.1e6 * 4
    assert (q4_bundle / "llm-q4_k_m.gguf").stat().st_size < f32_size / 4


@pytest.mark.parametrize("bits, quant", [(8, "Q8_0"), (16, "F16")])
def test_other_widths(tiny_spm_checkpoint, tmp_path, bits, quant):
    assert main(["--bits", str(bits), "--model", str(tiny_spm_checkpoint), "--out", str(tmp_path / "b")]) == 0
    assert read_bundle(tmp_path / "b").quant == quant


def test_bad_inputs_give_clear_errors_and_leave_nothing(tiny_spm_checkpoint, tmp_path, capsys):
    def run(*args):
        code = main(list(args))
        return code, capsys.readouterr().err

    code, err = run("--model", str(tmp_path / "missing"), "--out", str(tmp_path / "b"))
    assert code == 2 and "is not a directory" in err
    code, err = run("--model", str(tmp_path), "--out", str(tmp_path / "b"))
    assert code == 2 and "no config.json" in err
    broken = tmp_path / "no-view"
    shutil.copytree(tiny_spm_checkpoint, broken)
    (broken / "view.json").unlink()
    code, err = run("--model", str(broken), "--out", str(tmp_path / "b"))
    assert code == 2 and "view.json" in err
    config = json.loads((broken / "config.json").read_text())
    config["text_config"]["model_type"] = "gemma"
    (broken / "config.json").write_text(json.dumps(config))
    code, err = run("--model", str(broken), "--out", str(tmp_path / "b"))
    assert code == 2 and "'gemma' is not supported" in err
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "config.json").write_text("{}")
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    code, err = run("--model", str(tmp_path / "adapter"), "--out", str(tmp_path / "b"))
    assert code == 2 and "merge it first" in err
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b*"))
    (tmp_path / "taken").mkdir()
    code, err = run("--model", str(tiny_spm_checkpoint), "--out", str(tmp_path / "taken"))
    assert code == 2 and "--force" in err


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "example: python -m export.quantize --bits 4" in capsys.readouterr().out


def test_a_bfloat16_checkpoint_is_quantized_from_an_f16_source(tiny_checkpoint, tmp_path, monkeypatch):
    """A 7B checkpoint is bfloat16: its quantizer source is F16 (14 GB), never F32 (28 GB); float32 weights keep F32."""
    import torch

    import export.quantize as quantize
    from export.gguf import checkpoint_dtypes
    from training.model import load_llava

    model, processor = load_llava(tiny_checkpoint, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    processor.save_pretrained(tmp_path / "bf16")
    shutil.copy(tiny_checkpoint / "view.json", tmp_path / "bf16" / "view.json")
    assert checkpoint_dtypes(tmp_path / "bf16") == {"BF16"} and checkpoint_dtypes(tiny_checkpoint) == {"F32"}
    sources = []
    real = quantize.write_gguf
    monkeypatch.setattr(quantize, "write_gguf", lambda d, out, dtype: sources.append(dtype) or real(d, out, dtype))
    quantize.build_bundle(tmp_path / "bf16", tmp_path / "b", bits=4, progress=False)
    quantize.build_bundle(tiny_checkpoint, tmp_path / "f", bits=4, progress=False)
    assert sources == ["f16", "f32"]
    assert read_bundle(tmp_path / "b").quant == "Q4_K_M"


def test_a_model_trained_with_hints_exports_its_knowledge_and_the_runtime_hints_as_training_did(
    tiny_spm_checkpoint, tmp_path, monkeypatch
):
    import yaml

    from appliance.bundle import BundleError, file_entry, manifest_to_yaml
    from appliance.hints import KnowledgeError
    from appliance.runtime.model import GraspModel
    from export.quantize import build_bundle
    from training import evaluate
    from training.evaluate import bundle_answerer, torch_answerer
    from training.model import load_llava
    from training.view import ModelView

    knowledge = {"uses": {"whip": {"words": ["People whip cream with."], "objects": ["a whisk"]}}}
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_spm_checkpoint, checkpoint)
    view = ModelView(variant="rt", decimals=2, size=224, crop=320, knowledge=knowledge)
    view.save(checkpoint / "view.json")
    bundle = tmp_path / "bundle"
    build_bundle(checkpoint, bundle, bits=8, progress=False)
    manifest = read_bundle(bundle)  # the knowledge is hashed with the rest
    assert manifest.knowledge == "knowledge.yaml" and "knowledge.yaml" in manifest.files
    assert yaml.safe_load((bundle / "knowledge.yaml").read_text())["uses"] == knowledge["uses"]
    model = GraspModel.load(bundle)
    asked = "could you pass me a thing to whip cream?"
    for instruction in (asked, "pick up the mug"):
        segments = model.prompt_segments(instruction, first=True)
        training = model.llm.tokenize(view.prompt(instruction), add_bos=True, special=True, start=True)
        assert segments == [None if t == model.image_token else t for t in training]  # the records' first turn
    assert "Hint: a whisk." in view.prompt(asked) and "Hint" not in view.prompt("pick up the mug")
    follow = b"".join(model.llm.piece(t) for t in model.prompt_segments("whip it harder", first=False)).decode()
    assert "Hint" not in follow  # follow-ups carry none, as in training
    session = model.session()  # the replies say which objects the hint named (the daemon's `hint`)
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert session.ask(asked, image, max_new_tokens=8).hint == ("a whisk",)
    assert session.ask("whip it harder", max_new_tokens=8).hint == ()
    assert model.session().ask("pick up the mug", image, max_new_tokens=8).hint == ()
    # offline evaluation records them too, through the bundle and through torch (``hint_by_kind``)
    assert bundle_answerer(model, max_new_tokens=8)(image, None, asked)[2]["hint"] == ["a whisk"]
    monkeypatch.setattr(evaluate, "MAX_NEW_TOKENS", 8)  # the hints do not depend on the answer's length
    torch_model, processor = load_llava(checkpoint)
    view_image = np.zeros((224, 224, 3), np.uint8)
    requests = [(None, view_image, asked), (None, view_image, "pick up the mug")]
    assert [extra["hint"] for *_, extra in torch_answerer(torch_model, processor, view).many(requests)] == [
        ["a whisk"],
        [],
    ]
    model.llm.close()
    # a user's edit must be rehashed; a broken table is refused by name
    (bundle / "knowledge.yaml").write_text("uses: [unclosed\n")
    with pytest.raises(BundleError, match="knowledge.yaml"):
        read_bundle(bundle)
    manifest.files["knowledge.yaml"] = file_entry(bundle / "knowledge.yaml")
    (bundle / "manifest.yaml").write_text(manifest_to_yaml(manifest))
    read_bundle(bundle)  # the hashes agree again: what is refused next is the table itself
    with pytest.raises(KnowledgeError, match="knowledge.yaml"):
        GraspModel.load(bundle)
