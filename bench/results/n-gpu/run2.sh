#!/bin/bash
# On the lent GPU, second lease: continue from run 1's checkpoint-006400 on the other views (v4-v7) of the same scenes.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
mkdir -p /tmp/site && tar -C /tmp/site -xJf .gpu/site.tar.xz && (cd .gpu && python3 -m zipfile -e data.zip .) || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 - <<'PY' || exit 4
import lzma, pathlib
from safetensors.torch import load_file, save_file
for d in (".gpu/ground-data", ".gpu/describe"):
    pathlib.Path(d, "train.json").write_text(lzma.open(f"{d}/train.json.xz", "rt").read())
w = load_file(".gpu/ckpt/model.bf16.safetensors")
save_file({k: v.float() for k, v in w.items()}, ".gpu/ckpt/model.safetensors", metadata={"format": "pt"})
PY
ARGS="--strategy decoder --model .gpu/ckpt --data .gpu/ground-data --mix .gpu/describe --batch-size 64 --micro-batch 64 --lr 0.0005 --attend 1 --attend-from turn --workers 12"
timeout 270 python3 -m training.train $ARGS --out /tmp/g --steps 4400 --save-every 1100 2>&1 | grep -v Loading | tail -3
cp /tmp/g/metrics.csv $OUT/metrics.csv
for c in $(ls -d /tmp/g/checkpoint-* | tail -2); do
  python3 -c "
import sys, torch; from safetensors.torch import load_file, save_file
w = load_file(sys.argv[1] + '/model.safetensors')
save_file({k: v.to(torch.bfloat16) for k, v in w.items()}, sys.argv[2], metadata={'format': 'pt'})" $c $OUT/$(basename $c).bf16.safetensors
done
ls -la $OUT; tail -2 /tmp/g/metrics.csv; echo "total $(( $(date +%s) - T0 )) s"
