#!/usr/bin/env bash
# Put a Jetson in the power mode and clocks rtgrasp's latency figures were measured at
# (run by rtgrasp.service before start; a no-op on anything that is not a Jetson).
#   RTGRASP_NVPMODEL=0 (MAXN on AGX Orin; Orin Nano: 0 = 15 W) can be overridden in the unit's environment.
set -u
command -v nvpmodel >/dev/null 2>&1 || { echo "not a Jetson: clocks unchanged"; exit 0; }
nvpmodel -m "${RTGRASP_NVPMODEL:-0}" || echo "nvpmodel failed (continuing)"
command -v jetson_clocks >/dev/null 2>&1 && jetson_clocks || echo "jetson_clocks unavailable (continuing)"
nvpmodel -q 2>/dev/null | head -2
exit 0
