"""Child processes, told as a person reads them: how one ended, and the last lines it wrote."""

from __future__ import annotations

import signal
from pathlib import Path

SIGNAL_HINTS = {
    "SIGILL": "llama.cpp was built for instructions this CPU cannot run: rebuild it with REBUILD=1 scripts/build_llama_cpp",
    "SIGKILL": "killed from outside (the kernel's OOM killer, or kill -9): see dmesg",
}


def describe_exit(code: int | None) -> str:
    """A ``Popen.returncode`` / ``Process.exitcode`` in words: ``-11`` → ``"signal SIGSEGV"``."""
    if code is None:
        return "no exit code (still running)"
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"
    hint = SIGNAL_HINTS.get(name)
    return f"signal {name}" + (f" ({hint})" if hint else "")


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ('' when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "".join(text.splitlines(True)[-lines:])
