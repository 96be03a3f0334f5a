import json
import os
from pathlib import Path

import pytest

# MuJoCo renders on the CPU here; a machine with a GPU may set MUJOCO_GL=egl.
os.environ.setdefault("MUJOCO_GL", "osmesa")


def build_tiny_checkpoint(
    out: Path, tokenizer: str, variant: str = "rt", decimals: int = 2, crop: int | None = 320
) -> Path:
    """A random tiny LLaVA saved as a checkpoint directory with its view.json (what export reads)."""
    from training.model import TinyConfig, build_tiny

    model, processor = build_tiny(TinyConfig(tokenizer=tokenizer), seed=0)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "view.json").write_text(json.dumps({"variant": variant, "decimals": decimals, "size": 224, "crop": crop}))
    return out


@pytest.fixture(scope="session", params=["spm", "bpe"])
def tiny_checkpoint(request, tmp_path_factory):
    """A random tiny LLaVA of each tokenizer family (RT answers, 2 decimals, 320 px workspace crop)."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


@pytest.fixture(scope="session")
def tiny_spm_checkpoint(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-spm-only"), "spm")


@pytest.fixture(scope="session")
def f32_bundle(tiny_spm_checkpoint, tmp_path_factory):
    """An F32 bundle of the spm tiny model: the runtime must match torch on it."""
    from export.quantize import build_bundle

    out = tmp_path_factory.mktemp("bundles") / "f32"
    build_bundle(tiny_spm_checkpoint, out, bits=32, progress=False)
    return out


@pytest.fixture(scope="session")
def nra_bundle(tiny_spm_checkpoint, tmp_path_factory):
    """A Q8 bundle of the random tiny model with the NR-A contract: the grammar guarantees a pose at once."""
    import shutil

    from export.quantize import build_bundle

    root = tmp_path_factory.mktemp("nra")
    checkpoint = root / "ckpt"
    shutil.copytree(tiny_spm_checkpoint, checkpoint)
    (checkpoint / "view.json").write_text('{"variant": "nr-a", "decimals": 3, "size": 224, "crop": 320}')
    build_bundle(checkpoint, root / "bundle", bits=8, progress=False)
    return root / "bundle"


@pytest.fixture(scope="session")
def refusing_checkpoint(tiny_spm_checkpoint, tmp_path_factory):
    """The tiny model as a checkpoint whose view.json says it was trained to refuse (RT answers)."""
    import shutil

    checkpoint = tmp_path_factory.mktemp("refusing") / "ckpt"
    shutil.copytree(tiny_spm_checkpoint, checkpoint)
    (checkpoint / "view.json").write_text(
        '{"variant": "rt", "decimals": 2, "size": 224, "crop": 320, "refusals": true}'
    )
    return checkpoint


@pytest.fixture(scope="session")
def refusing_bundle(refusing_checkpoint, tmp_path_factory):
    """A Q8 RT bundle of the tiny model whose manifest says it was trained to refuse."""
    from export.quantize import build_bundle

    out = tmp_path_factory.mktemp("refusing-bundle") / "bundle"
    build_bundle(refusing_checkpoint, out, bits=8, progress=False)
    return out
