import os

# MuJoCo renders on the CPU here; a machine with a GPU may set MUJOCO_GL=egl.
os.environ.setdefault("MUJOCO_GL", "osmesa")
