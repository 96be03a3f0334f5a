set -e
cd /work/main
P=.venv/bin/python
$P -m training.synth --out runs/n-gpu/fresh-clutter --images 100 --seed 0 --scene-seed 3101 --objects 2-5 --phrasing test --workers 1
$P -m training.synth --out runs/n-gpu/fresh-single --images 100 --seed 0 --scene-seed 3102 --objects 1-1 --phrasing test --workers 1
