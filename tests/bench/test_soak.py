"""The soak bench against a real daemon process: 1,000 predicts from 4 concurrent clients."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("zmq")

from tests.appliance.daemon.conftest import write_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import soak  # noqa: E402


def soak_run(tmp_path, bundle, recording, requests: int) -> dict:
    path, _, _ = write_config(tmp_path, bundle, recording)
    out = tmp_path / "soak.json"
    assert soak.main(["--config", str(path), "--requests", str(requests), "--clients", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["answered_ok"] == requests and report["failed"] == 0
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
    return report


def test_forty_predicts_from_four_clients_are_all_answered(tmp_path, nra_bundle, recording, capsys):
    soak_run(tmp_path, nra_bundle, recording, 40)  # ten a client; the 1,000 of the slow test below check memory
    assert "40/40 answered ok" in capsys.readouterr().out


@pytest.mark.slow
def test_thousand_predicts_from_four_clients_all_answered_with_stable_memory(tmp_path, nra_bundle, recording, capsys):
    report = soak_run(tmp_path, nra_bundle, recording, 1000)
    assert report["rss_growth_second_half_mb"] < 10, report["rss_mb"]  # no growth without bound
    assert "1000/1000 answered ok" in capsys.readouterr().out


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        soak.main(["--requests", "10"])  # neither --config nor --endpoint
    with pytest.raises(SystemExit):
        soak.main(["--config", str(tmp_path / "missing.yaml")])
