"""CurveZMQ for the daemon's sockets, and ``python -m appliance.keys`` to make the certificates.

A daemon that binds anything but loopback must run CurveZMQ (the config
refuses otherwise, unless ``insecure: true``): its sockets are CURVE servers
with the daemon's secret key, and a ZAP authenticator admits only clients
whose public keys are in the ``allowed_clients`` directory. A plaintext client
or an unknown key never completes the handshake, so it gets no service at all.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


class SecurityError(RuntimeError):
    """Missing or unreadable keys."""


def load_keypair(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` certificate (python -m appliance.keys)."""
    import zmq.auth

    path = Path(path)
    if not path.is_file():
        raise SecurityError(f"{path} does not exist (create keys: python -m appliance.keys --out DIR --name server)")
    public, secret = zmq.auth.load_certificate(str(path))
    if secret is None:
        raise SecurityError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def load_public_key(path: Path) -> bytes:
    """The public key of a ``.key`` certificate."""
    import zmq.auth

    public, _ = zmq.auth.load_certificate(str(path))
    return public


class CurveServer:
    """The authenticator thread plus the server keys, applied to each socket before it binds."""

    def __init__(self, context, secret_key_file: Path, allowed_clients: Path):
        from zmq.auth.thread import ThreadAuthenticator

        allowed = Path(allowed_clients)
        if not allowed.is_dir():
            raise SecurityError(f"allowed_clients {allowed} is not a directory of client public keys")
        self.public, self.secret = load_keypair(Path(secret_key_file))
        self.auth = ThreadAuthenticator(context, log=logging.getLogger("appliance.zap"))
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(allowed))
        count = len(list(allowed.glob("*.key")))
        log.info("CurveZMQ on: %d allowed client key(s) in %s", count, allowed)

    def secure(self, socket) -> None:
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True

    def close(self) -> None:
        self.auth.stop()


def secure_client(socket, client_secret_file: Path, server_public_file: Path) -> None:
    """Make a client socket a CURVE client of the daemon."""
    public, secret = load_keypair(Path(client_secret_file))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = load_public_key(Path(server_public_file))
