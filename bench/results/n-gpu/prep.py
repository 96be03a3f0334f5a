"""Pack part of n-build's ground data, half its description records and a checkpoint for the lent GPU, inside the
64 MiB a device call carries: views FIRST..LAST-1 of each scene re-encoded as JPEG q85, records xz-compressed,
weights in bf16, all in one stored zip (per-file blocks would count otherwise).

    python bench/results/n-gpu/prep.py 0 4 runs/n-attend-turn/ground/checkpoint-001600 0   # run 1
    python bench/results/n-gpu/prep.py 4 8 runs/n-gpu/ground/checkpoint-006400 1           # run 2
"""

import json
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

SRC = Path("runs/n-build")
OUT = Path(".gpu")  # ignored through .git/info/exclude; the device call names it in carry


def pack(name: str, records: list[dict]) -> None:
    src, dst = SRC / name, OUT / "pack" / name
    (dst / "images/train").mkdir(parents=True, exist_ok=True)
    done = set()
    for r in records:
        jpg = r["image"][:-4] + ".jpg"
        if r["image"] not in done:
            Image.open(src / r["image"]).convert("RGB").save(dst / jpg, "JPEG", quality=85)
            done.add(r["image"])
        r["image"] = jpg
    with lzma.open(dst / "train.json.xz", "wt") as f:
        json.dump(records, f)
    for extra in ("dataset.yaml", "view.json"):
        shutil.copy(src / extra, dst / extra)
    print(name, len(records), "records", len(done), "images")


def main(first: int, last: int, checkpoint: Path, half: int) -> None:
    shutil.rmtree(OUT / "pack", ignore_errors=True)
    views = tuple(f"_v{k}." for k in range(first, last))
    ground = json.loads((SRC / "ground-data/train.json").read_text())
    pack("ground-data", [r for r in ground if any(v in r["image"] for v in views)])
    describe = json.loads((SRC / "describe/train.json").read_text())
    pack("describe", describe[: len(describe) // 2] if half == 0 else describe[len(describe) // 2 :])
    (OUT / "pack/ckpt").mkdir()
    for f in checkpoint.iterdir():
        if f.name not in ("model.safetensors", "trainer_state.pt"):
            shutil.copy(f, OUT / "pack/ckpt" / f.name)
    weights = load_file(checkpoint / "model.safetensors")
    save_file(
        {k: v.to(torch.bfloat16) for k, v in weights.items()},
        OUT / "pack/ckpt/model.bf16.safetensors",
        metadata={"format": "pt"},
    )
    (OUT / "data.zip").unlink(missing_ok=True)
    subprocess.run(["zip", "-0", "-qr", "../data.zip", "."], cwd=OUT / "pack", check=True)
    shutil.rmtree(OUT / "pack")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
