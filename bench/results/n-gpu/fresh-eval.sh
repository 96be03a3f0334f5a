set -e
cd /work/main
P=.venv/bin/python
while pgrep -f "runs/n-gpu/tune.sh" > /dev/null; do sleep 20; done
for s in clutter single; do
  $P -m training.evaluate --model runs/n-gpu/ground2/checkpoint-004400 --root runs/n-gpu/fresh-$s --split all --cnn runs/n-vision/checkpoint-004000 --json runs/n-gpu/fresh-ground-$s.json > runs/n-gpu/fresh-ground-$s.out 2>&1
done
for s in clutter single; do
  $P -m training.evaluate --bundle runs/n-gpu/bundle --root runs/n-gpu/fresh-$s --split all --refine --json runs/n-gpu/fresh-q4-$s.json > runs/n-gpu/fresh-q4-$s.out 2>&1
done
