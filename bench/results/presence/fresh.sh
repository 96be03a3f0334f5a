# The presence check on fresh seeds (3407 clutter, 3408 single; never used before), the same Q4 model with and
# without it, side by side on the same images, the baselines beside them. Run from the repository root.
set -e
P=.venv/bin/python
$P -m training.synth --out runs/presence/fresh-clutter --images 100 --seed 0 --scene-seed 3407 --objects 2-5 --phrasing test --workers 2
$P -m training.synth --out runs/presence/fresh-single --images 100 --seed 0 --scene-seed 3408 --objects 1-1 --phrasing test --workers 2
for s in clutter single; do
  $P -m training.evaluate --bundle runs/n-gpu/bundle-dec-presence --root runs/presence/fresh-$s --split all --refine --cnn runs/n-vision/checkpoint-004000 --json runs/presence/fresh-gate-$s.json > runs/presence/fresh-gate-$s.out 2>&1
  $P -m training.evaluate --bundle runs/n-gpu/bundle-dec --root runs/presence/fresh-$s --split all --json runs/presence/fresh-nogate-$s.json > runs/presence/fresh-nogate-$s.out 2>&1
done
