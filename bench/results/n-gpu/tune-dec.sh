set -e
cd /work/main
P=.venv/bin/python
$P -m training.train --strategy decoder --model runs/n-gpu/ground2/checkpoint-004400 --data runs/n-build/rt-data --out runs/n-gpu/tune-dec --steps 400 --batch-size 32 --micro-batch 16 --save-every 200 --lr 0.001 --attend 1 --attend-from turn
$P -m export.quantize --bits 4 --model runs/n-gpu/tune-dec/checkpoint-000400 --out runs/n-gpu/bundle-dec --force
for s in clutter single; do
  $P -m training.evaluate --bundle runs/n-gpu/bundle-dec --root runs/n-build/test-$s --split all --json runs/n-gpu/eval-dec-q4-$s.json --refine > runs/n-gpu/eval-dec-q4-$s.out 2>&1
done
