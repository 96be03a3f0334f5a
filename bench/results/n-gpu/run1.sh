#!/bin/bash
# On the lent GPU: continue the n-attend-turn ground stage (checkpoint-001600) for as many steps as ~330 s allow.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
mkdir -p /tmp/site && tar -C /tmp/site -xJf .gpu/site.tar.xz && (cd .gpu && python3 -m zipfile -e data.zip .) || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi -L
python3 - <<'PY' || exit 4
import lzma, torch, transformers, pathlib
from safetensors.torch import load_file, save_file
print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name(0))
for d in (".gpu/ground-data", ".gpu/describe"):
    pathlib.Path(d, "train.json").write_text(lzma.open(f"{d}/train.json.xz", "rt").read())
w = load_file(".gpu/ckpt/model.bf16.safetensors")
save_file({k: v.float() for k, v in w.items()}, ".gpu/ckpt/model.safetensors", metadata={"format": "pt"})
PY
ARGS="--strategy decoder --model .gpu/ckpt --data .gpu/ground-data --mix .gpu/describe --batch-size 64 --micro-batch 64 --lr 0.001 --attend 1 --attend-from turn --workers 12"
python3 -m training.train $ARGS --out /tmp/probe --steps 40 --save-every 40 2>&1 | tail -3 || exit 5
cp /tmp/probe/metrics.csv $OUT/probe-metrics.csv
RATE=$(python3 -c "
import csv; r=list(csv.DictReader(open('/tmp/probe/metrics.csv')))
print((float(r[39]['seconds'])-float(r[9]['seconds']))/30)")
LEFT=$(( 400 - ($(date +%s) - T0) ))
STEPS=$(python3 -c "print(max(200, int(($LEFT - 25) / $RATE) // 100 * 100))")
echo "probe: $RATE s/step (batch 64); $LEFT s left; running $STEPS steps"
timeout $(( LEFT + 60 )) python3 -m training.train $ARGS --out /tmp/g --steps $STEPS --save-every $(( STEPS / 2 )) 2>&1 | grep -v Loading | tail -5
cp /tmp/g/metrics.csv $OUT/metrics.csv
for c in /tmp/g/checkpoint-*; do
  python3 -c "
import sys, torch; from safetensors.torch import load_file, save_file
w = load_file(sys.argv[1] + '/model.safetensors')
save_file({k: v.to(torch.bfloat16) for k, v in w.items()}, sys.argv[2], metadata={'format': 'pt'})" $c $OUT/$(basename $c).bf16.safetensors
done
ls -la $OUT; tail -2 /tmp/g/metrics.csv; echo "total $(( $(date +%s) - T0 )) s"
