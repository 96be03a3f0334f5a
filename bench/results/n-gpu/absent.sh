set -e
cd /work/main
P=.venv/bin/python
$P -m training.build_dataset --root runs/n-build/data --split iw --fold 0 --out runs/n-gpu/rt-data-abs --size 224 --crop 320 --variant rt --decimals 2 --augment 8 --refine-fraction 0.7 --refine-rounds 3 --targets one --absent-fraction 0.5
$P -m training.train --strategy decoder --model runs/n-gpu/ground2/checkpoint-004400 --data runs/n-gpu/rt-data-abs --out runs/n-gpu/tune-abs --steps 400 --batch-size 32 --micro-batch 16 --save-every 400 --lr 0.001 --attend 1 --attend-from turn
$P -m export.quantize --bits 4 --model runs/n-gpu/tune-abs/checkpoint-000400 --out runs/n-gpu/bundle-abs --force
for s in clutter single; do
  $P -m training.evaluate --bundle runs/n-gpu/bundle-abs --root runs/n-build/test-$s --split all --json runs/n-gpu/eval-abs-q4-$s.json --refine > runs/n-gpu/eval-abs-q4-$s.out 2>&1
done
