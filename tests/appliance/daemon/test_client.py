"""python -m appliance.client against a running daemon."""

import json

import pytest

from appliance.client import main


def test_predict_only_prints_reasoning_and_pose_and_saves_the_image(daemon, tmp_path, capsys):
    out = tmp_path / "pred.png"
    code = main(["--endpoint", daemon.requests, "--predict-only", "pick up the mug", "--save-image", str(out)])
    text = capsys.readouterr().out
    assert "reasoning:" in text and "pose:" in text and "object:" in text and "session:" in text
    assert code in (0, 3) and out.read_bytes()[:4] == b"\x89PNG"


def test_the_object_line():
    import io

    from appliance.client import show

    reply = {"ok": True, "reasoning": "This is a box.", "pose": {"x": 0.5, "y": 0.5, "theta": 0.0}, "session": "s"}
    lines = []
    for obj in ({"category": "box", "box": [260, 200, 380, 280]}, {"category": None, "box": None}, None):
        out = io.StringIO()
        show({**reply, "object": obj}, out)
        lines += [line for line in out.getvalue().splitlines() if line.startswith("object:")]
    assert lines == ["object:    box, box [260, 200, 380, 280] px", "object:    ?, no box", "object:    ?"]
    out = io.StringIO()
    show({**reply, "hint": ["a knife", "a pair of scissors"]}, out)
    assert "hint:      a knife, a pair of scissors\n" in out.getvalue()
    out = io.StringIO()
    show({**reply, "hint": []}, out)  # none: no line
    assert "hint:" not in out.getvalue()


def test_status_json_and_refine(daemon, capsys):
    assert main(["--endpoint", daemon.requests, "--status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["ok"] and status["state"] == "idle"
    main(["--endpoint", daemon.requests, "--predict-only", "pick up the mug", "--json"])
    session = json.loads(capsys.readouterr().out)["session"]
    assert main(["--endpoint", daemon.requests, "--refine", session, "grasp it by the handle instead", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["session"] == session


def test_errors(daemon, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--endpoint", daemon.requests])  # no instruction
    assert main(["--endpoint", "tcp://127.0.0.1:9", "--status", "--timeout", "0.3", "--retries", "2"]) == 1
    err = capsys.readouterr().err
    assert "no reply" in err and "systemctl status rtgrasp" in err and "tcp://127.0.0.1:9" in err
    assert main(["--endpoint", daemon.requests, "--home"]) == 3  # no arm configured: an error reply
    assert "no_robot" in capsys.readouterr().out


def test_the_advice_after_a_timeout_names_the_keys():
    from appliance.client import what_to_check

    assert "--key" in what_to_check("tcp://127.0.0.1:5570", curve=False)
    assert "allowed_clients" in what_to_check("tcp://127.0.0.1:5570", curve=True)
