set -e
cd /work/main
P=.venv/bin/python
while pgrep -f "eval-dec-q4fix" > /dev/null; do sleep 10; done
$P -m training.synth --out runs/n-gpu/fresh2-clutter --images 100 --seed 0 --scene-seed 3203 --objects 2-5 --phrasing test --workers 2
$P -m training.synth --out runs/n-gpu/fresh2-single --images 100 --seed 0 --scene-seed 3204 --objects 1-1 --phrasing test --workers 2
for s in clutter single; do
  $P -m training.evaluate --bundle runs/n-gpu/bundle-dec --root runs/n-gpu/fresh2-$s --split all --refine --cnn runs/n-vision/checkpoint-004000 --json runs/n-gpu/fresh2-dec-q4-$s.json > runs/n-gpu/fresh2-dec-q4-$s.out 2>&1
done
