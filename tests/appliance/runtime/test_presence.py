"""The presence check: a bundle whose vision graph says which categories the image shows refuses an instruction
naming one it does not show, before decoding; the export checks the heads belong to the tower."""

import shutil

import numpy as np
import pytest
import yaml

pytest.importorskip("llama_cpp")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from appliance.bundle import MANIFEST_FILE, BundleError, PresenceSpec, manifest_from_dict, read_bundle  # noqa: E402
from appliance.runtime.llm import LlamaError, LlamaSettings  # noqa: E402
from appliance.runtime.model import GraspModel  # noqa: E402
from appliance.runtime.objects import CategoryNames  # noqa: E402
from appliance.runtime.presence import PresenceGate  # noqa: E402
from appliance.runtime.worker import ModelWorker, RemoteSession  # noqa: E402

SHOWN = "mug"
"""What the doctored identity head sees on every patch, whatever the image."""


def write_heads(checkpoint, shown: str = SHOWN):
    """Vision heads whose identity head gives ``shown`` to every patch of any image (weights zero, bias large)."""
    from safetensors.torch import save_file

    from training.model import load_llava
    from training.stages import HEADS_FILE, PatchHeads, identity_classes

    model, _ = load_llava(checkpoint)
    classes = identity_classes()
    heads = PatchHeads(model.config.vision_config.hidden_size, len(classes))
    with torch.no_grad():
        heads.identity.weight.zero_()
        heads.identity.bias.fill_(-10.0)
        heads.identity.bias[classes.index(shown)] = 10.0
    save_file(heads.state_dict(), str(checkpoint / HEADS_FILE))
    return classes


@pytest.fixture(scope="module")
def vision_checkpoint(refusing_checkpoint, tmp_path_factory):
    """The vision stage's checkpoint the model was built on: the same tower, and the heads."""
    out = tmp_path_factory.mktemp("vision") / "checkpoint"
    shutil.copytree(refusing_checkpoint, out)
    write_heads(out)
    return out


@pytest.fixture(scope="module")
def presence_bundle(refusing_checkpoint, vision_checkpoint, tmp_path_factory):
    from export.quantize import build_bundle

    root = tmp_path_factory.mktemp("presence")
    manifest = build_bundle(refusing_checkpoint, root / "bundle", bits=8, progress=False, heads=vision_checkpoint)
    assert manifest.presence is not None and manifest.presence.min_patches == 0.5
    assert manifest.metrics["presence_max_error_patches"] <= 1e-3  # the graph's counts are torch's
    return root / "bundle"


@pytest.fixture(scope="module")
def model(presence_bundle):
    model = GraspModel.load(presence_bundle, llama=LlamaSettings(n_ctx=512, n_batch=64))
    yield model
    model.llm.close()


def camera(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def test_the_graph_counts_the_patches_of_each_category(model):
    embedded = model.embed(camera())
    classes = list(model.manifest.presence.classes)
    assert embedded.patches.shape == (len(classes),)
    assert embedded.patches[classes.index(SHOWN)] == pytest.approx(model.manifest.n_image_tokens, rel=1e-3)
    assert embedded.patches[classes.index("knife")] < 1e-3


def test_a_named_object_no_patch_shows_is_refused_without_decoding(model):
    session = model.session()
    prediction = session.ask("Can you lift the knife?", camera())
    assert prediction.gated and prediction.refusal == "knife" and prediction.pose is None
    assert prediction.text == "I see no knife here."
    assert prediction.timings.decode_tokens == 0 and prediction.timings.vision_ms > 0
    assert b"".join(model.llm.piece(t) for t in prediction.tokens).decode().strip() == prediction.text
    # the conversation goes on from the refusal, replayed into the cache first
    follow = session.ask(f"the {SHOWN} then")
    assert not follow.gated and follow.timings.decode_tokens > 0
    assert len(session.turns) == 2


def test_what_the_image_shows_and_what_names_nothing_go_to_the_model(model):
    for instruction in (f"pick up the {SHOWN}", "hand me something to cut with", "grab the object please"):
        prediction = model.session().ask(instruction, camera(1))
        assert not prediction.gated and prediction.timings.decode_tokens > 0, instruction


def test_the_model_may_not_refuse_what_the_gate_saw(model):
    """An instruction whose named category the gate sees is decoded without the refusal in the grammar; one that
    names nothing keeps it (the model decides)."""
    real, asked = model.generate, []

    def generate(*args, **kwargs):
        asked.append(kwargs.get("refusal", True))
        return real(*args, **kwargs)

    model.generate = generate
    try:
        seen = model.session().ask(f"pick up the {SHOWN}", camera(3))
        model.session().ask("hand me something to cut with", camera(3))
    finally:
        model.generate = real
    assert asked == [False, True]
    assert seen.refusal is None and seen.pose is not None


def test_a_refinement_naming_an_absent_object_is_refused_too(model):
    session = model.session()
    first = session.ask(f"pick up the {SHOWN}", camera(2))
    assert not first.gated
    second = session.ask("take the hammer instead")
    assert second.gated and second.refusal == "hammer"


def test_the_check_can_be_left_off_at_run_time(presence_bundle):
    worker = ModelWorker(presence_bundle, llama=LlamaSettings(n_ctx=512, n_batch=64), presence=False).start()
    try:
        assert not worker.presence_active
        prediction = RemoteSession(worker).ask("Can you lift the knife?", camera())
        assert not prediction.gated and prediction.timings.decode_tokens > 0
    finally:
        worker.close()
    on = ModelWorker(presence_bundle, llama=LlamaSettings(n_ctx=512, n_batch=64)).start()
    try:
        assert on.presence_active and RemoteSession(on).ask("Can you lift the knife?", camera()).gated
    finally:
        on.close()


def test_a_bundle_without_heads_has_no_check(refusing_bundle):
    model = GraspModel.load(refusing_bundle, llama=LlamaSettings(n_ctx=512, n_batch=64))
    try:
        assert model.manifest.presence is None and model.presence is None
        prediction = model.session().ask("Can you lift the knife?", camera())
        assert not prediction.gated and prediction.timings.decode_tokens > 0
    finally:
        model.llm.close()


def test_a_manifest_asking_for_the_check_needs_the_graph_output(refusing_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(refusing_bundle, bundle)
    data = yaml.safe_load((bundle / MANIFEST_FILE).read_text())
    data["presence"] = {"classes": ["mug", "knife"]}
    (bundle / MANIFEST_FILE).write_text(yaml.safe_dump(data))
    with pytest.raises(LlamaError, match="no presence output"):
        GraspModel.load(bundle, llama=LlamaSettings(n_ctx=256, n_batch=64))


@pytest.mark.parametrize(
    "presence, message",
    [
        ({"classes": []}, "distinct"),
        ({"classes": ["mug", "mug"]}, "distinct"),
        ({"classes": ["Mug"]}, "lower case"),
        ({"classes": ["mug"], "min_patches": -1}, "min_patches"),
        ({"classes": ["mug"], "threshold": 1}, "unknown key"),
    ],
)
def test_bad_presence_sections_are_named(presence_bundle, presence, message):
    data = yaml.safe_load((presence_bundle / MANIFEST_FILE).read_text())
    data["presence"] = presence
    with pytest.raises(BundleError, match=message):
        manifest_from_dict(data)


def test_the_manifest_round_trips_the_section(presence_bundle):
    manifest = read_bundle(presence_bundle)
    assert isinstance(manifest.presence, PresenceSpec) and "knife" in manifest.presence.classes
    assert manifest.presence.source.endswith("checkpoint")


def test_heads_of_another_tower_are_refused(refusing_checkpoint, vision_checkpoint, tmp_path):
    """Heads trained on a tower the model no longer has would count the wrong things."""
    from safetensors.torch import load_file, save_file

    from export.vision import presence_head
    from training.model import load_llava

    model, _ = load_llava(refusing_checkpoint)
    other = tmp_path / "vision"
    shutil.copytree(vision_checkpoint, other)
    state = load_file(str(other / "model.safetensors"))
    name = next(k for k in state if "vision_tower" in k and k.endswith("fc1.weight"))
    state[name] = state[name] * 1.05
    save_file(state, str(other / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="differs from the one its heads were trained on"):
        presence_head(other, model)
    # stored in bfloat16 and read back, it is the same tower
    rounded = {k: (v.to(torch.bfloat16).float() if "vision_tower" in k else v) for k, v in state.items()}
    rounded[name] = load_file(str(refusing_checkpoint / "model.safetensors"))[name].to(torch.bfloat16).float()
    save_file(rounded, str(other / "model.safetensors"), metadata={"format": "pt"})
    assert presence_head(other, model).classes[0] == "alarm clock"
    (other / "vision_heads.safetensors").unlink()
    with pytest.raises(ValueError, match="no vision_heads.safetensors"):
        presence_head(other, model)


def test_a_model_that_cannot_refuse_gets_no_check(tiny_spm_checkpoint, vision_checkpoint, presence_bundle, tmp_path):
    from export.gguf import ExportError
    from export.quantize import build_bundle

    with pytest.raises(ExportError, match="not trained to refuse"):
        build_bundle(tiny_spm_checkpoint, tmp_path / "b", bits=8, progress=False, heads=vision_checkpoint)
    bundle = tmp_path / "edited"
    shutil.copytree(presence_bundle, bundle)
    data = yaml.safe_load((bundle / MANIFEST_FILE).read_text())
    data["answer"]["refusals"] = False
    (bundle / MANIFEST_FILE).write_text(yaml.safe_dump(data))
    with pytest.raises(LlamaError, match="not trained to refuse"):
        GraspModel.load(bundle, llama=LlamaSettings(n_ctx=256, n_batch=64))


def test_a_refusal_keeps_another_sessions_cache(model):
    first = model.session()
    first.ask(f"pick up the {SHOWN}", camera(3))
    assert model._active is first
    model.session().ask("Can you lift the knife?", camera(4))  # refused by the check: nothing evaluated
    assert model._active is first  # so the first session's next turn need not replay its image


def test_min_patches_needs_heads(refusing_checkpoint, tmp_path, capsys):
    from export.quantize import main

    with pytest.raises(SystemExit):
        main(["--model", str(refusing_checkpoint), "--out", str(tmp_path / "b"), "--min-patches", "2"])
    assert "--min-patches needs --heads" in capsys.readouterr().err


def test_the_gate_reads_names_and_synonyms_of_known_categories():
    spec = PresenceSpec(("cup", "mug", "knife"), min_patches=0.5)
    names = {"mug": "mug", "coffee mug": "mug", "knife": "knife", "cup": "cup", "banana": "banana"}
    gate = PresenceGate(spec, CategoryNames(names))
    patches = np.array([0.0, 3.0, 0.4])
    assert gate.unseen("grab the coffee mug please", patches) is None
    assert gate.unseen("Can you lift the KNIFE?", patches) == "knife"
    assert gate.unseen("I want the cup.", patches) == "cup"
    assert gate.unseen("hand me something to cut with", patches) is None
    assert gate.unseen("pick up the banana", patches) is None  # a word the head has no class for: the model decides
    with pytest.raises(ValueError, match="patch counts"):
        gate.unseen("pick up the cup", np.zeros(2))
