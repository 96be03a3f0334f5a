"""rtgrasp appliance: the on-robot core, in layers.

- Contracts at the top: ``grasp`` and ``geometry`` (numpy only), ``answer``, ``bundle`` (+ PyYAML), ``config``.
- ``runtime/``: the model at run time (onnxruntime + llama.cpp), in its own process (``runtime.worker``).
- ``daemon/``: the service (ZeroMQ protocol, jobs, journal, speech, settings).
- ``camera/``, ``robot/``, ``sim/``: device families and the simulated cell.
- Command-line tools: ``python -m appliance`` (the daemon), ``appliance.client``, ``appliance.demo``,
  ``appliance.calibrate``, ``appliance.keys``, ``appliance.selfcheck``.
"""
