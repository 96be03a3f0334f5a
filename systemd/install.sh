#!/usr/bin/env bash
# Install the rtgrasp daemon as a systemd service on the robot's computer (run as root from a checkout).
#   sudo systemd/install.sh [--extras appliance,robot,camera,speech] [--no-enable]
# Creates the rtgrasp user, a virtualenv under /opt/rtgrasp/venv, copies the code to /opt/rtgrasp/src,
# the config to /etc/rtgrasp (never overwriting an existing file), udev rules and realtime limits,
# then enables the unit. Start it with: systemctl start rtgrasp
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=appliance,robot,speech
ENABLE=1
PREFIX=${PREFIX:-/opt/rtgrasp}
ETC=${ETC:-/etc/rtgrasp}
while (($#)); do
    case $1 in
        --extras) EXTRAS=$2; shift 2 ;;
        --no-enable) ENABLE=0; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "run as root (sudo $0)" >&2; exit 1; }

id rtgrasp >/dev/null 2>&1 || useradd --system --home-dir /var/lib/rtgrasp --shell /usr/sbin/nologin rtgrasp
for group in video plugdev audio realtime; do
    getent group "$group" >/dev/null && usermod -aG "$group" rtgrasp || true
done

mkdir -p "$PREFIX" "$ETC" /var/lib/rtgrasp
rm -rf "$PREFIX/src.new"
cp -r . "$PREFIX/src.new"
rm -rf "$PREFIX/src.new/.venv" "$PREFIX/src.new/runs" "$PREFIX/src.new/.git"
rm -rf "$PREFIX/src" && mv "$PREFIX/src.new" "$PREFIX/src"
[[ -x "$PREFIX/venv/bin/python" ]] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install --quiet --upgrade pip
"$PREFIX/venv/bin/python" -m pip install --quiet "$PREFIX/src[$EXTRAS]"

for f in appliance.yaml franka.yaml camera.yaml handeye.yaml; do
    [[ -e "$ETC/$f" ]] || install -m 0640 -g rtgrasp "firmware_config/$f" "$ETC/$f"
done
install -m 0644 firmware_config/99-rtgrasp-camera.rules /etc/udev/rules.d/99-rtgrasp-camera.rules
install -m 0644 firmware_config/99-rtgrasp-realtime.conf /etc/security/limits.d/99-rtgrasp-realtime.conf
udevadm control --reload-rules 2>/dev/null || true
chown -R rtgrasp:rtgrasp /var/lib/rtgrasp

install -m 0644 systemd/rtgrasp.service /etc/systemd/system/rtgrasp.service
systemctl daemon-reload
if ((ENABLE)); then systemctl enable rtgrasp; fi
echo "installed: edit $ETC/*.yaml (robot IP, camera, hand-eye, bundle path), then: systemctl start rtgrasp"
