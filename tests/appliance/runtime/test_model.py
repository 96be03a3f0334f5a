"""The runtime (bundle → onnxruntime + llama.cpp) against torch on the same checkpoint, and its guards."""

import dataclasses

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from appliance.bundle import BundleError  # noqa: E402
from appliance.runtime.gbnf import GrammarError  # noqa: E402
from appliance.runtime.llm import LlamaSettings  # noqa: E402
from appliance.runtime.model import GraspModel  # noqa: E402
from appliance.runtime.preprocess import prepare  # noqa: E402

INSTRUCTION = "pick up the mug"


def _camera_image(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def runtime(f32_bundle):
    model = GraspModel.load(f32_bundle, llama=LlamaSettings.exact(n_ctx=512, n_batch=24))
    yield model
    model.llm.close()


@pytest.fixture(scope="module")
def torch_model(tiny_spm_checkpoint):
    from training.model import load_llava

    model, processor = load_llava(tiny_spm_checkpoint)
    return model.eval(), processor


def _torch_inputs(runtime, processor, image):
    from training.model import PROMPT_TEMPLATE

    view, pixels, _ = prepare(image, runtime.manifest.image)
    inputs = processor(images=view, text=PROMPT_TEMPLATE.format(instruction=INSTRUCTION), return_tensors="pt")
    return inputs, pixels


def test_prefill_logits_equal_torch_with_the_image_injected(runtime, torch_model):
    """Image embeddings go in at the <image> position, in chunks smaller than the 64 image tokens."""
    model, processor = torch_model
    image = _camera_image(1)
    inputs, pixels = _torch_inputs(runtime, processor, image)
    assert np.abs(inputs["pixel_values"].numpy() - pixels).max() < 1e-5
    with torch.no_grad():
        want = model(**inputs).logits[0, -1].numpy()
    answer = runtime.session().ask(INSTRUCTION, image, max_new_tokens=1, constrain=False)
    # the sequence holds BOS, the prompt and 64 image positions, as torch's; the one answer token
    # is not evaluated yet, so the context still holds the prefill's logits
    assert runtime.llm.n_past == inputs["input_ids"].shape[1] == answer.timings.prefill_tokens
    got = runtime.llm.logits()
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-3


def test_greedy_answer_equals_torch_generate(runtime, torch_model):
    model, processor = torch_model
    image = _camera_image(2)
    inputs, _ = _torch_inputs(runtime, processor, image)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    want = out[0, inputs["input_ids"].shape[1] :].tolist()
    eos = processor.tokenizer.eos_token_id
    want = want[: want.index(eos)] if eos in want else want
    got = runtime.session().ask(INSTRUCTION, image, max_new_tokens=24, constrain=False)
    assert list(got.tokens) == want


def test_grammar_forces_a_parseable_pose_that_stops_when_complete(tiny_spm_checkpoint, tmp_path):
    """A random NR-A model writes garbage unconstrained; under the grammar every answer is a valid pose."""
    import shutil

    from export.quantize import build_bundle

    nra = tmp_path / "nra-ckpt"

    shutil.copytree(tiny_spm_checkpoint, nra)
    (nra / "view.json").write_text('{"variant": "nr-a", "decimals": 3, "size": 224, "crop": null}')
    build_bundle(nra, tmp_path / "b", bits=8, progress=False)
    model = GraspModel.load(tmp_path / "b")
    for seed in range(3):
        free = model.session().ask(INSTRUCTION, _camera_image(seed), max_new_tokens=20, constrain=False)
        assert not free.ok
        answer = model.session().ask(INSTRUCTION, _camera_image(seed))
        assert answer.ok, answer.text
        assert answer.text == model.format.render(answer.pose)  # nothing after the pose
        assert answer.timings.decode_tokens == len(answer.tokens) <= len(answer.text)
    model.llm.close()


def test_refinement_reuses_the_cache_and_matches_a_replayed_history(runtime):
    image = _camera_image(3)
    a = runtime.session()
    first = a.ask(INSTRUCTION, image, max_new_tokens=12, constrain=False)
    second = a.ask("grasp it by the handle instead", max_new_tokens=12, constrain=False)
    assert second.timings.prefill_tokens < 40  # only the follow-up (and the pending end of turn), not the image again
    assert second.timings.vision_ms == 0.0
    b = runtime.session()  # b takes the cache over, then a must replay its whole history
    b.ask("pick up the bowl", _camera_image(4), max_new_tokens=4, constrain=False)
    again = a.ask("grasp it from the left side instead", max_new_tokens=12, constrain=False)
    assert again.timings.prefill_tokens > 64
    c = runtime.session()
    c.ask(INSTRUCTION, image, max_new_tokens=12, constrain=False)
    c.ask("grasp it by the handle instead", max_new_tokens=12, constrain=False)
    replayed = c.ask("grasp it from the left side instead", max_new_tokens=12, constrain=False)
    assert replayed.tokens == again.tokens
    assert c.turns[0].tokens == first.tokens and c.turns[1].tokens == second.tokens


def test_session_errors(runtime):
    session = runtime.session()
    with pytest.raises(ValueError, match="needs an image"):
        session.ask("grasp it by the handle instead")
    with pytest.raises(ValueError, match="empty"):
        session.ask("  ", _camera_image())
    with pytest.raises(ValueError, match="RGB uint8"):
        session.ask(INSTRUCTION, np.zeros((10, 10), np.uint8))


def test_invalid_grammar_never_reaches_llama_cpp(runtime):
    with pytest.raises(GrammarError):
        runtime.llm.grammar('root ::= "a" undefined-rule')
    with pytest.raises(GrammarError):
        runtime.llm.grammar('root ::= "unterminated')


def test_oversized_context_is_an_error_not_an_abort(f32_bundle):
    from appliance.runtime.llm import LlamaError, TooLong

    model = GraspModel.load(f32_bundle, llama=LlamaSettings(n_ctx=256, n_batch=16))
    assert model.llm.n_ctx == 256
    session = model.session()
    first = session.ask(INSTRUCTION, _camera_image(), max_new_tokens=1000, constrain=False)
    assert len(first.tokens) == 256 - first.timings.prefill_tokens  # the answer ends where the context does
    assert not first.ok
    with pytest.raises(LlamaError, match="context full"):
        session.ask("grasp it by the handle instead")
    assert len(session.turns) == 1 and model.llm.n_past <= 256
    with pytest.raises(TooLong):  # checked before anything is evaluated
        model.session().ask("pick up the mug " * 60, _camera_image())
    model.llm.close()


def test_tampered_bundle_is_refused(f32_bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(f32_bundle, copy)
    with open(copy / "vision.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    with pytest.raises(BundleError, match="SHA-256"):
        GraspModel.load(copy)


def test_timings_are_reported(runtime):
    p = runtime.session().ask(INSTRUCTION, _camera_image(5), max_new_tokens=8, constrain=False)
    t = p.timings
    assert t.vision_ms > 0 and t.prefill_ms > 0 and t.decode_ms > 0 and t.decode_tokens == len(p.tokens)
    assert t.prefill_tokens == len(runtime.prompt_segments(INSTRUCTION, first=True)) - 1 + 64
    assert dataclasses.asdict(t)["decode_tokens"] == len(p.tokens)
    assert t.as_dict()["decode_tokens_per_s"] > 0


def test_provider_order_and_fallback():
    from appliance.runtime.vision import PROVIDERS, provider_list

    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_list(PROVIDERS, available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_list(PROVIDERS, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    trt = provider_list(PROVIDERS, ["TensorrtExecutionProvider", *available], trt_cache="/tmp/trt")
    assert trt[0][0] == "TensorrtExecutionProvider" and trt[0][1]["trt_engine_cache_path"] == "/tmp/trt"
    assert [p if isinstance(p, str) else p[0] for p in trt][1:] == available
    assert provider_list(["CUDAExecutionProvider"], ["CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]  # CPU always last


def test_ngram_drafter():
    from appliance.runtime.draft import NgramDrafter

    d = NgramDrafter([[1, 2, 3, 4, 5, 6], [7, 2, 3, 9]], max_n=3, min_n=2, k=3)
    assert d.draft([0, 2, 3]) == [4, 5, 6]  # the first continuation of (2, 3) wins
    assert d.draft([7, 2, 3]) == [9]  # the longer n-gram (7, 2, 3) is tried first
    assert d.draft([8, 8]) == []
    assert d.draft([5, 8, 8], context=[8, 8, 1, 5, 8, 8]) == [1, 5, 8]  # prompt lookup in the conversation


@pytest.mark.parametrize("constrain", [False, True])
def test_speculative_decoding_gives_exactly_the_greedy_answer(runtime, constrain):
    """Drafts from the corpus and from the answer itself (a random model repeats itself): same tokens, fewer steps."""
    assert runtime.drafter is not None
    before = runtime.accepted
    for seed in range(3):
        image = _camera_image(10 + seed)
        plain = runtime.session().ask(INSTRUCTION, image, max_new_tokens=48, constrain=constrain, speculative=False)
        fast = runtime.session().ask(INSTRUCTION, image, max_new_tokens=48, constrain=constrain, speculative=True)
        assert fast.tokens == plain.tokens and fast.text == plain.text
    assert runtime.accepted > before  # some drafts were right and kept


@pytest.fixture(scope="module")
def q4_runtime(tiny_spm_checkpoint, tmp_path_factory):
    """The Q4_K_M bundle with llama.cpp's default settings: batched and single-token arithmetic differ here.

    Its output layer is scaled up tenfold. A random model's best and second-best tokens are otherwise often
    closer than Q4's near-tie margin, as a trained model's rarely are: then every batched check is replayed and no
    draft is kept (seen with one corpus's random model: 69 replays, 0 kept of 103 drafted)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from export.quantize import build_bundle

    root = tmp_path_factory.mktemp("q4")
    checkpoint = root / "ckpt"
    shutil.copytree(tiny_spm_checkpoint, checkpoint)
    weights = load_file(checkpoint / "model.safetensors")
    (head,) = [name for name in weights if name.endswith("lm_head.weight")]  # its name varies with transformers
    weights[head] = weights[head] * 10
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    out = root / "bundle"
    build_bundle(checkpoint, out, bits=4, progress=False)
    model = GraspModel.load(out, llama=LlamaSettings(n_ctx=512, n_batch=24))
    yield model
    model.llm.close()


def _answers(model, speculative, seeds=range(6)):
    return [
        model.session().ask(INSTRUCTION, _camera_image(20 + s), max_new_tokens=48, speculative=speculative).tokens
        for s in seeds
    ]


def test_speculative_decoding_on_q4_gives_exactly_the_greedy_answer(q4_runtime):
    plain = _answers(q4_runtime, False)
    before = q4_runtime.accepted
    assert _answers(q4_runtime, True) == plain
    assert q4_runtime.accepted > before


def test_near_ties_replay_the_answer_the_plain_way(q4_runtime, monkeypatch):
    """With every token after a batched check treated as a near tie, each is chosen from replayed logits."""
    plain = _answers(q4_runtime, False, seeds=range(2))
    assert q4_runtime.speculative_margin > 0.1  # K-quants: batched and single-token kernels differ
    monkeypatch.setattr(q4_runtime, "speculative_margin", float("inf"))
    before, evaluated = q4_runtime.replays, q4_runtime.llm.n_evaluated
    assert _answers(q4_runtime, True, seeds=range(2)) == plain
    replays = q4_runtime.replays - before
    assert replays > 0
    # a replay re-evaluates only what was computed in batches since the last exact position, never the whole
    # answer again: at most one draft (10 tokens) and its pending token per replay
    answer_tokens = sum(len(t) for t in plain)
    prefill = 2 * 100  # two prompts of the image's 64 embeddings and the instruction (under 100 positions each)
    assert q4_runtime.llm.n_evaluated - evaluated <= prefill + 2 * answer_tokens + 11 * replays


def test_near_tie():
    from appliance.runtime.model import near_tie

    logits = np.array([0.0, 5.0, 4.95, 1.0], dtype=np.float32)
    assert near_tie(logits, 1, None, 0.1)
    assert not near_tie(logits, 1, None, 0.01)
    assert near_tie(np.array([3.0, 3.0], dtype=np.float32), 0, None, 0.01)  # an exact tie
    assert not near_tie(
        np.array([3.0, 3.0], dtype=np.float32), 0, None, 0.0
    )  # margin 0: exact kernels, never re-checked


def test_a_reasoning_that_runs_long_is_made_to_give_its_pose_in_time(runtime):
    """The random RT model never ends its reasoning by itself; within the budget it still answers with a pose."""
    before = runtime.forced_poses
    for seed in range(3):
        prediction = runtime.session().ask(INSTRUCTION, _camera_image(30 + seed), max_new_tokens=60)
        assert prediction.ok and prediction.reasoning, prediction.text
        assert len(prediction.tokens) <= 60
    assert runtime.forced_poses > before
    too_short = runtime.session().ask(INSTRUCTION, _camera_image(40), max_new_tokens=4)
    assert not too_short.ok  # no room for any reasoning: rejected, as before


@pytest.mark.parametrize(
    "answer",
    [
        "I see no knife here.",
        "The mug is a cylinder. [0.50, 0.25], -0.30",
        "I see no reason to worry. [0.50, 0.25], 1.00",
    ],
)
def test_the_grammar_follows_the_tokens_the_model_writes_after_the_prompt_to_the_end(refusing_bundle, answer):
    """llama.cpp's own grammar sampler, fed the answer's tokens as they follow "ASSISTANT:" (the first one carries
    the space), allows each of them and then the end. A refusal could never end before the grammar allowed that
    space: the appliance answered every absent object with a pose."""
    assert_grammar_follows(refusing_bundle, answer)


def test_where_the_refusal_is_ruled_out_the_answer_may_not_begin_one(refusing_bundle):
    """The refusal out of its grammar, the tiny clutter model still began one ("I see no cup here. The lo cup here.
    ... [0.31, 0.18], 1.51"). The refusal's first word is now ruled out of the answer's opening where the refusal
    is, and only there: through ``generate``, plain and speculative."""
    from appliance.runtime.model import AnswerInProgress

    model = GraspModel.load(refusing_bundle, llama=LlamaSettings(n_ctx=256, n_batch=64))
    try:
        text = model.manifest.followup_template.format(instruction="pick up the cup")
        prompt = model.llm.tokenize(text, special=True)
        in_context = model.llm.tokenize(text + " " + model.format.render_refusal("cup"), special=True)
        assert in_context[: len(prompt)] == prompt and in_context[len(prompt)] in model.refusal_openers
        assert all(model.llm.piece(t).strip() == b"I" for t in model.refusal_openers)

        def first(refusal, speculative=False):
            model.llm.truncate(0)
            model.llm.eval_tokens(prompt)
            return model.generate(8, speculative=speculative, refusal=refusal)[0][0]

        openers = model.refusal_openers
        model.refusal_openers = frozenset()
        t0 = first(False)  # what the random model opens with: made an opener for the test
        model.refusal_openers = frozenset({t0})
        assert first(False) != t0 and first(False, speculative=True) != t0
        assert first(True) == t0  # where the model decides, it may begin its refusal
        model.refusal_openers = openers
        model.llm.truncate(0)
        model.llm.eval_tokens(prompt)
        assert model.generate(40, refusal=False, lead="I see a mug.")[1].startswith("I see a mug.")  # a lead opens it

        logits = np.zeros(model.llm.n_vocab, np.float32)
        opener = next(iter(openers))
        logits[opener] = 10.0
        there = model.llm.tokenize(" There", special=False)[0]
        logits[there] = 5.0
        answer = AnswerInProgress(
            model, 30, model.llm.grammar(model.format.grammar(refusal=False)), True, not_first=openers
        )
        assert answer.pick(logits) == there and logits[opener] == 10.0  # the caller's logits are left as they were
        answer.add(there)
        assert answer.pick(logits) == opener  # only at the opening: "There is a cup. I ..." stays possible
    finally:
        model.llm.close()


def test_an_nr_pose_may_open_with_the_space_its_first_token_carries(nra_bundle):
    assert_grammar_follows(nra_bundle, "[0.500, 0.250], -0.300")


def assert_grammar_follows(bundle, answer):
    model = GraspModel.load(bundle, llama=LlamaSettings(n_ctx=256, n_batch=64))
    try:
        prompt = model.llm.tokenize(" USER: hi ASSISTANT:")
        tokens = model.llm.tokenize(f" USER: hi ASSISTANT: {answer}")
        assert tokens[: len(prompt)] == prompt
        grammar = model.llm.grammar(model.format.grammar())
        for token in tokens[len(prompt) :]:
            assert grammar.allowed(token, 1.0), model.llm.piece(token)
            grammar.accept(token)
        assert grammar.allowed(model.llm.eos, 1.0)
    finally:
        model.llm.close()
