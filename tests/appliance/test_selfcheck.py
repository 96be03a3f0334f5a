"""The install-time check of llama.cpp: a real decode in a child, and a child that dies is explained."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from appliance import selfcheck  # noqa: E402

AMX = (
    "tilezero",
    "tileloadd",
    "tileloaddt1",
    "tdpbssd",
    "tdpbsud",
    "tdpbusd",
    "tdpbuud",
    "tdpbf16ps",
    "tdpfp16ps",
    "ldtilecfg",
)


def test_the_installed_llama_cpp_decodes_a_tiny_q4_model_in_a_child():
    passed, message = selfcheck.check()
    assert passed, message
    assert "decoded tokens [" in message


def test_the_tiny_gguf_decodes_the_same_tokens_twice(tmp_path):
    path = selfcheck.write_tiny_gguf(tmp_path / "t.gguf")
    first = selfcheck.decode(path)
    assert first == selfcheck.decode(path) and len(first) == 8


def test_a_child_killed_by_sigill_is_named_with_the_rebuild_command():
    dies = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
    passed, message = selfcheck.check(child_command=dies)
    assert not passed
    assert "signal SIGILL" in message
    assert "llama.cpp was built for instructions this CPU cannot run" in message
    assert "REBUILD=1 scripts/build_llama_cpp" in message


def test_the_command_line_passes_here():
    done = subprocess.run([sys.executable, "-m", "appliance.selfcheck"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("selfcheck: llama.cpp loads a Q4_0 model")


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or __import__("platform").machine() != "x86_64", reason="x86-64 only"
)
def test_the_installed_cpu_backend_holds_no_amx_or_avx512_instruction():
    import llama_cpp

    libs = list(Path(llama_cpp.__file__).parent.rglob("libggml-cpu.so*"))
    assert libs, "llama-cpp-python ships no libggml-cpu.so"
    text = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(libs[0])], capture_output=True, text=True, check=True
    ).stdout
    mnemonics = set()
    for line in text.splitlines():  # "  1f2a:\ttilezero %tmm4"
        parts = line.split("\t")
        if len(parts) > 1 and parts[1].strip():
            mnemonics.add(parts[1].split()[0])
    assert "vmovups" in mnemonics or "vmovaps" in mnemonics  # the disassembly was read at all
    assert not mnemonics & set(AMX), sorted(mnemonics & set(AMX))
    assert "%zmm" not in text  # no AVX-512 register: the baseline is AVX2


def test_text_that_falls_back_to_bytes_tokenizes_whatever_its_length(tmp_path):
    from appliance.runtime.llm import LlamaSettings, TextModel

    text = "zzzz qqqq xxxx \U0001f600 " * 3
    model = TextModel(selfcheck.write_tiny_gguf(tmp_path / "t.gguf"), LlamaSettings(n_ctx=64, n_batch=16))
    try:
        tokens = model.tokenize(text, add_bos=True, special=False)
    finally:
        model.close()
    assert len(tokens) > len(text.encode()) + 8  # more than the first try's room: the retry was needed
