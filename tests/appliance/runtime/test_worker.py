"""The model in its own process: the same answers as in-process, and a native crash is one failed call."""

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("onnxruntime")

from appliance.runtime.llm import LlamaSettings  # noqa: E402
from appliance.runtime.model import GraspModel  # noqa: E402
from appliance.runtime.worker import ModelCrashed, ModelWorker  # noqa: E402

SETTINGS = LlamaSettings(n_ctx=512, n_batch=64)
IMAGE = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def worker(f32_bundle):
    w = ModelWorker(f32_bundle, llama=SETTINGS).start()
    yield w
    w.close()


def crash_during(worker, call, sig=signal.SIGSEGV, command="ask"):
    """Run ``call`` with the model process set to die by ``sig`` inside its next ``command`` (fault injection: the
    crash lands mid-call, as a native one would); what the call raised (``error``) or returned (``value``)."""
    worker.inject_fault(command, sig)
    try:
        return {"value": call()}
    except Exception as exc:  # what the test inspects
        return {"error": exc}


def test_answers_equal_the_in_process_model(worker, f32_bundle):
    local = GraspModel.load(f32_bundle, llama=SETTINGS)
    try:
        want = local.session()
        first, second = (
            want.ask("pick up the mug", IMAGE, 24),
            want.ask("grasp it by the handle instead", max_new_tokens=24),
        )
    finally:
        local.llm.close()
    session = worker.session()
    got = session.ask("pick up the mug", IMAGE, 24)
    assert got.tokens == first.tokens and got.text == first.text
    assert session.ask("grasp it by the handle instead", max_new_tokens=24).tokens == second.tokens
    assert len(session.turns) == 2 and worker.vision_providers


def test_a_segfault_mid_call_is_model_crashed_and_the_next_call_works(worker):
    session = worker.session()
    first = session.ask("pick up the mug", IMAGE, 24)
    restarts = worker.restarts
    outcome = crash_during(worker, lambda: session.ask("grasp it by the handle instead", max_new_tokens=24))
    assert isinstance(outcome.get("error"), ModelCrashed), outcome
    assert "SIGSEGV" in str(outcome["error"])
    assert worker.restarts == restarts + 1 and "SIGSEGV" in worker.status()["last_crash"]
    # the conversation lived in the dead process: it is replayed, and goes on as if nothing happened
    again = session.ask("grasp it by the handle instead", max_new_tokens=24)
    assert session.turns[0] is first and len(session.turns) == 2
    fresh = worker.session()
    fresh.ask("pick up the mug", IMAGE, 24)
    assert fresh.ask("grasp it by the handle instead", max_new_tokens=24).tokens == again.tokens


def test_an_abort_on_the_first_turn_names_sigabrt(worker):
    outcome = crash_during(worker, lambda: worker.session().ask("pick up the mug", IMAGE, 24), signal.SIGABRT)
    assert "SIGABRT" in str(outcome["error"])
    assert worker.session().ask("pick up the mug", IMAGE, 24).tokens


def test_a_model_process_killed_between_calls_is_replaced_at_the_next_call(worker):
    session = worker.session()
    first = session.ask("pick up the mug", IMAGE, 24)
    restarts = worker.restarts
    os.kill(worker.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while worker.alive:  # the kill is asynchronous: the call comes once the process is gone
        assert time.monotonic() < deadline
        time.sleep(0.01)
    second = session.ask("grasp it by the handle instead", max_new_tokens=24)  # replayed in the new process
    assert worker.restarts == restarts + 1 and "SIGKILL" in worker.status()["last_crash"]
    assert session.turns[0] is first and second.tokens


def test_a_hung_model_is_killed_at_the_timeout_and_its_late_answer_never_read(f32_bundle):
    worker = ModelWorker(f32_bundle, llama=SETTINGS, call_timeout_s=1.0).start()
    try:
        os.kill(worker.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":  # signals are async
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(ModelCrashed, match="gave no answer within 1 s and was killed"):
            worker.session().ask("pick up the mug", IMAGE, 24)
        assert worker.restarts == 1
        assert worker.session().ask("pick up the mug", IMAGE, 24).tokens
    finally:
        worker.close()


def test_a_bundle_that_does_not_load_fails_at_start(f32_bundle, tmp_path):
    import shutil

    from appliance.bundle import BundleError

    copy = tmp_path / "b"
    shutil.copytree(f32_bundle, copy)
    llm = next(copy.glob("*.gguf"))
    llm.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(BundleError):  # the parent verifies hashes before any child starts
        ModelWorker(copy, llama=SETTINGS)
