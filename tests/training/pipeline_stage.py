"""A stand-in stage for the pipeline runner's tests: ``python -m tests.training.pipeline_stage OUT [fail]``.

It also fails when a file ``OUT.fail`` exists (a run cut short, with the command unchanged), writes its
arguments (``--resume`` among them, where the runner adds it) into OUT, and with ``--check`` answers whether OUT
is still what it writes (``Stage.check``)."""

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    if "--check" in argv:  # is OUT still what this stage writes? (OUT.stale: no; OUT.broken: the check fails)
        print("checked")
        return 5 if Path(f"{out}.broken").exists() else 1 if Path(f"{out}.stale").exists() else 0
    print(f"stage writing {out}")
    print("a long log line\n" * 50, end="")
    if (len(argv) > 1 and argv[1] == "fail") or Path(f"{out}.fail").exists():
        print("something went wrong", file=sys.stderr)
        return 3
    if len(argv) > 1 and argv[1] == "nothing":
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(" ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
