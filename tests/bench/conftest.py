"""Fixtures the benches' tests share with the daemon's tests."""

from tests.appliance.daemon.conftest import recording  # noqa: F401  (a fixture: three recorded RGB-D frames)
