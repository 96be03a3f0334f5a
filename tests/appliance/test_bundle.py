"""The bundle manifest contract: validation that names the bad key, and hash verification."""

import dataclasses

import pytest
import yaml

from appliance.bundle import (
    MANIFEST_FILE,
    AnswerSpec,
    BundleError,
    FileEntry,
    ImageSpec,
    Manifest,
    file_entry,
    manifest_from_dict,
    manifest_to_yaml,
    read_bundle,
)


def _bundle(tmp_path) -> Manifest:
    (tmp_path / "llm.gguf").write_bytes(b"GGUF model bytes")
    (tmp_path / "vision.onnx").write_bytes(b"onnx bytes")
    manifest = Manifest(
        schema=1,
        model="m",
        source="/src",
        quant="Q4_K_M",
        llm="llm.gguf",
        vision="vision.onnx",
        vision_precision="fp32",
        image=ImageSpec(224, 224, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), crop=320),
        n_image_tokens=64,
        embedding_width=256,
        prompt_template="USER: <image>\n{instruction} ASSISTANT:",
        image_token="<image>",
        followup_template=" USER: {instruction} ASSISTANT:",
        answer=AnswerSpec("rt", 2),
        files={n: file_entry(tmp_path / n) for n in ("llm.gguf", "vision.onnx")},
    )
    (tmp_path / MANIFEST_FILE).write_text(manifest_to_yaml(manifest))
    return manifest


def test_round_trip(tmp_path):
    manifest = _bundle(tmp_path)
    assert read_bundle(tmp_path) == manifest


def test_unknown_missing_and_wrong_keys_are_named(tmp_path):
    _bundle(tmp_path)
    data = yaml.safe_load((tmp_path / MANIFEST_FILE).read_text())
    with pytest.raises(BundleError, match=r"\.quantization: unknown key"):
        manifest_from_dict({**data, "quantization": "Q4"})
    with pytest.raises(BundleError, match=r"\.llm: required key is missing"):
        manifest_from_dict({k: v for k, v in data.items() if k != "llm"})
    with pytest.raises(BundleError, match=r"image\.size: expected int"):
        manifest_from_dict({**data, "image": {**data["image"], "size": "224"}})
    with pytest.raises(BundleError, match="quant must be one of"):
        manifest_from_dict({**data, "quant": "Q3"})
    with pytest.raises(BundleError, match="schema 2 is not supported"):
        manifest_from_dict({**data, "schema": 2})
    with pytest.raises(BundleError, match="decimals"):
        manifest_from_dict({**data, "answer": {"variant": "rt", "decimals": 0}})
    with pytest.raises(BundleError, match="not listed under files"):
        manifest_from_dict({**data, "llm": "other.gguf"})


def test_changed_truncated_or_missing_files_are_refused(tmp_path):
    _bundle(tmp_path)
    (tmp_path / "vision.onnx").write_bytes(b"onnx bytez")
    with pytest.raises(BundleError, match="SHA-256 does not match"):
        read_bundle(tmp_path)
    (tmp_path / "vision.onnx").write_bytes(b"onnx")
    with pytest.raises(BundleError, match="bytes, the manifest says"):
        read_bundle(tmp_path)
    (tmp_path / "vision.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        read_bundle(tmp_path)
    assert read_bundle(tmp_path, verify=False).vision == "vision.onnx"


def test_not_a_bundle_and_bad_yaml(tmp_path):
    with pytest.raises(BundleError, match="not a bundle"):
        read_bundle(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("schema: [1\n")
    with pytest.raises(BundleError, match="not valid YAML"):
        read_bundle(tmp_path)


def test_paths_in_file_names_are_refused(tmp_path):
    manifest = _bundle(tmp_path)
    sneaky = dataclasses.replace(manifest, files={**manifest.files, "../etc/passwd": FileEntry("0" * 64, 1)})
    (tmp_path / MANIFEST_FILE).write_text(manifest_to_yaml(sneaky))
    with pytest.raises(BundleError, match="must not contain a path"):
        read_bundle(tmp_path)


CATEGORIES = {"mug": "mug", "coffee mug": "mug", "knife": "knife", "kitchen knife": "knife"}


def test_categories_round_trip_and_older_manifests_have_none(tmp_path):
    older_dir, newer_dir = tmp_path / "older", tmp_path / "newer"
    older_dir.mkdir()
    newer_dir.mkdir()
    older = _bundle(older_dir)
    data = yaml.safe_load((older_dir / MANIFEST_FILE).read_text())
    del data["categories"]  # a manifest written before the key existed
    (older_dir / MANIFEST_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
    assert read_bundle(older_dir) == older and older.categories is None

    newer = dataclasses.replace(_bundle(newer_dir), categories=CATEGORIES)
    (newer_dir / MANIFEST_FILE).write_text(manifest_to_yaml(newer))
    assert yaml.safe_load((newer_dir / MANIFEST_FILE).read_text())["categories"] == CATEGORIES
    assert read_bundle(newer_dir) == newer


@pytest.mark.parametrize(
    "categories, why",
    [
        ({"mug": "mug", "coffee mug": "cup"}, "map to a category that maps to itself"),  # cup is no category
        ({"Mug": "Mug"}, "lower case"),
        ({"mug": 3}, "expected str"),
    ],
)
def test_bad_categories_are_refused(tmp_path, categories, why):
    _bundle(tmp_path)
    data = yaml.safe_load((tmp_path / MANIFEST_FILE).read_text())
    with pytest.raises(BundleError, match=why):
        manifest_from_dict({**data, "categories": categories})


def test_the_bundled_demo_model_carries_its_checks_and_a_manifest_from_before_them_still_loads():
    from pathlib import Path

    bundle = Path(__file__).resolve().parents[2] / "models" / "rtgrasp-tiny"
    manifest = read_bundle(bundle)
    assert manifest.quant == "Q4_K_M" and manifest.categories and manifest.knowledge
    assert manifest.presence is not None and manifest.target_check.pose == "heads" and manifest.target_check.leads
    # the demo model of sessions before 28 had none of these sections: such a manifest still loads
    data = yaml.safe_load((bundle / MANIFEST_FILE).read_text())
    for key in ("categories", "presence", "target_check", "knowledge"):
        del data[key]
    del data["files"][manifest.knowledge]
    old = manifest_from_dict(data)
    assert old.categories is None and old.presence is None and old.target_check is None and old.knowledge is None
