# The presence check on objects never seen in training: a new object library (--seed 3509), 2-5 objects per
# scene, test phrasings; the same Q4 model with and without the check, side by side. Run from the repository root.
set -e
P=.venv/bin/python
$P -m training.synth --out runs/presence/new-clutter --images 100 --seed 3509 --objects 2-5 --phrasing test --workers 2
$P -m training.synth --out runs/presence/new-single --images 100 --seed 3510 --objects 1-1 --phrasing test --workers 2
for s in clutter single; do
  $P -m training.evaluate --bundle runs/n-gpu/bundle-dec-presence --root runs/presence/new-$s --split all --cnn runs/n-vision/checkpoint-004000 --json runs/presence/new-gate-$s.json > runs/presence/new-gate-$s.out 2>&1
  $P -m training.evaluate --bundle runs/n-gpu/bundle-dec --root runs/presence/new-$s --split all --json runs/presence/new-nogate-$s.json > runs/presence/new-nogate-$s.out 2>&1
done
