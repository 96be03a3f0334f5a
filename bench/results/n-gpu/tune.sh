set -e
cd /work/main
P=.venv/bin/python
$P -m training.train --strategy lora --model runs/n-gpu/ground2/checkpoint-004400 --data runs/n-build/rt-data --out runs/n-gpu/tune --steps 400 --batch-size 32 --micro-batch 16 --save-every 200 --lr 0.001 --attend 1 --attend-from turn
$P -m training.merge --adapter runs/n-gpu/tune/checkpoint-000400 --out runs/n-gpu/merged
$P -m export.quantize --bits 4 --model runs/n-gpu/merged --out runs/n-gpu/bundle --force
for s in clutter single; do
  $P -m training.evaluate --bundle runs/n-gpu/bundle --root runs/n-build/test-$s --split all --json runs/n-gpu/eval-q4-$s.json --refine --cnn runs/n-vision/checkpoint-004000 > runs/n-gpu/eval-q4-$s.out 2>&1
done
