"""Create CurveZMQ certificates for the daemon and its clients.

    python -m appliance.keys --out /etc/rtgrasp/keys --name server
    python -m appliance.keys --out ~/.rtgrasp --name alice --allow /etc/rtgrasp/clients

``NAME.key`` is the public certificate, ``NAME.key_secret`` the secret one
(mode 0600). ``--allow DIR`` also copies the public key into the daemon's
``allowed_clients`` directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def create(out: Path, name: str, allow: Path | None = None, force: bool = False) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret under ``out``; refuses to overwrite unless ``force``."""
    import zmq.auth

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    public, secret = out / f"{name}.key", out / f"{name}.key_secret"
    if (public.exists() or secret.exists()) and not force:
        raise FileExistsError(f"{public} or {secret} exists (use --force to replace)")
    made_public, made_secret = zmq.auth.create_certificates(str(out), name)
    os.chmod(made_secret, 0o600)
    if allow is not None:
        Path(allow).mkdir(parents=True, exist_ok=True)
        shutil.copy(made_public, Path(allow) / Path(made_public).name)
    return Path(made_public), Path(made_secret)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.keys",
        description="Create a CurveZMQ key pair for the rtgrasp daemon (--name server) or for a client.",
        epilog="example: python -m appliance.keys --out /etc/rtgrasp/keys --name server",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for NAME.key and NAME.key_secret")
    parser.add_argument("--name", required=True, help="server, or the client's name")
    parser.add_argument("--allow", type=Path, help="copy the public key into this allowed_clients directory")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if not args.name.replace("-", "").replace("_", "").isalnum():
        parser.error("--name may hold letters, digits, - and _ only")
    try:
        public, secret = create(args.out, args.name, args.allow, args.force)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"public key {public}\nsecret key {secret} (keep it private)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
