"""When drafting pays: the verify-cost curve measured on a loaded model, and the plan drawn from it."""

import numpy as np
import pytest

from appliance.runtime.speculation import VerifyCost, expected_tokens, plan

pytest.importorskip("llama_cpp")
pytest.importorskip("onnxruntime")


def test_expected_tokens_counts_the_accepted_prefix_and_the_checked_token():
    assert expected_tokens(0.0, 8) == 1.0
    assert expected_tokens(1.0, 8) == 9.0
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)


def test_plan_drafts_only_where_batches_are_cheap_enough():
    cheap = VerifyCost(10.0, {1: 1.0, 2: 1.05, 4: 1.1, 8: 1.3, 16: 2.0}, 0.0)  # bandwidth-bound: a Jetson
    dear = VerifyCost(10.0, {1: 1.0, 2: 1.9, 4: 3.8, 8: 7.6, 16: 15.0}, 0.0)  # compute-bound: this CPU, tiny model
    best = plan(cheap, 0.7)
    assert best.k == 7 and best.gain == pytest.approx(expected_tokens(0.7, 7) / 1.3)
    assert plan(cheap, 0.0).k == 0  # drafts never right: never worth a batch
    assert plan(dear, 0.45).k == 0 and plan(dear, 0.45).gain < 1.0
    # k=1 at ratio 1.05 with acceptance 0.05 gains exactly 1.0: not above the bar
    assert plan(VerifyCost(1.0, {1: 1.0, 2: 1.05}, 0.0), 0.05).k == 0


@pytest.fixture(scope="module")
def q4_bundle(tiny_spm_checkpoint, tmp_path_factory):
    from export.quantize import build_bundle

    out = tmp_path_factory.mktemp("q4s") / "bundle"
    build_bundle(tiny_spm_checkpoint, out, bits=4, progress=False)
    return out


def test_measure_times_batches_and_finds_the_kernel_difference(q4_bundle):
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import DEFAULT_SPECULATIVE_MARGIN, GraspModel

    model = GraspModel.load(q4_bundle, llama=LlamaSettings(n_ctx=256, n_batch=24), speculative="auto")
    cost = model.verify_cost
    assert set(cost.ratio) == {1, 2, 4, 8, 16} and cost.ratio[1] == 1.0 and cost.single_ms > 0
    assert all(r > 0 for r in cost.ratio.values())
    assert model.llm.n_past == 0  # the measurement leaves the sequence empty
    assert cost.logit_error >= 0.0
    assert model.speculative_margin == max(DEFAULT_SPECULATIVE_MARGIN, 2 * cost.logit_error)
    model.llm.close()


def _image(seed):
    return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


@pytest.mark.parametrize("policy", ["auto", "on"])
def test_policies_give_plain_greedy_answers(f32_bundle, policy, monkeypatch):
    """auto follows the plan, on always drafts; the answers are plain greedy decoding's either way."""
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel

    settings = LlamaSettings.exact(n_ctx=512, n_batch=24)
    plain = GraspModel.load(f32_bundle, llama=settings)
    model = GraspModel.load(f32_bundle, llama=settings, speculative=policy)
    if policy == "auto":  # make batches look as cheap as on a bandwidth-bound device, and plain answers measured
        cheap = VerifyCost(1.0, {1: 1.0, 2: 1.01, 4: 1.02, 8: 1.05, 16: 1.5}, model.verify_cost.logit_error)
        monkeypatch.setattr(model, "verify_cost", cheap)
        model.note_decode(False, 1e6, 1000)  # slow plain answers: drafting gets its turn
    assert model.plan.k > 0
    for seed in range(2):
        want = plain.session().ask("pick up the mug", _image(seed), max_new_tokens=40).tokens
        got = model.session().ask("pick up the mug", _image(seed), max_new_tokens=40).tokens  # the policy decides
        assert got == want
    assert model.drafted > 0 and len(model.checks) > 0
    assert sum(kept for _, kept in model.checks) == model.accepted
    assert all(0 <= kept <= drafted for drafted, kept in model.checks)
    plain.llm.close(), model.llm.close()


def test_off_never_drafts_and_measures_nothing(f32_bundle):
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel

    model = GraspModel.load(f32_bundle, llama=LlamaSettings(n_ctx=256, n_batch=24))
    assert model.policy == "off" and model.verify_cost is None and model.plan.k == 0
    model.session().ask("pick up the mug", _image(0), max_new_tokens=24)
    assert model.drafted == 0 and not model.checks
    with pytest.raises(ValueError, match="speculative must be one of"):
        GraspModel.load(f32_bundle, speculative="maybe")
    model.llm.close()


def test_auto_measures_both_ways_on_real_answers_and_keeps_the_faster(f32_bundle, monkeypatch):
    """The curve cannot see per-token overheads or near-tie replays: auto decodes the first answers plainly, the
    next with drafts, and keeps drafting only if that was faster."""
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel
    from appliance.runtime.speculation import MIN_DRAFTED

    model = GraspModel.load(f32_bundle, llama=LlamaSettings.exact(n_ctx=512, n_batch=24), speculative="auto")
    cheap = VerifyCost(5.0, {1: 1.0, 2: 1.01, 4: 1.02, 8: 1.05, 16: 1.5}, 0.0)
    monkeypatch.setattr(model, "verify_cost", cheap)
    assert model.plan.k == 0  # plain first, to know what plain costs here
    model.session().ask("pick up the mug", _image(3), max_new_tokens=24)
    assert model.plain_tokens > 0 and model.drafted_tokens == 0
    model.note_decode(False, 5.0 * MIN_DRAFTED, MIN_DRAFTED)  # plain: about 5 ms a token
    assert model.plan.k > 0  # now drafts are tried
    model.note_decode(True, 7.0 * MIN_DRAFTED, MIN_DRAFTED)  # drafted: 7 ms a token, slower
    stopped = model.plan
    assert stopped.k == 0 and stopped.gain < 1.0
    model.note_decode(True, 1.0 * MIN_DRAFTED, 3 * MIN_DRAFTED)  # with more answers drafting came out faster
    assert model.plan.k > 0 and model.plan.gain > 1.0
    model.llm.close()
