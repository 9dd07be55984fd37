"""Couriers' tests reuse the real-server-process fixture of the multi-node tests."""

from tests.multinode.conftest import start_nodes

__all__ = ["start_nodes"]
