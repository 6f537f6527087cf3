"""The sandbox's 3-replica Vault: shared state and one HTTP listener per replica."""

from sandbox.vault.app import make_app
from sandbox.vault.server import ReplicaServer, serve_cluster
from sandbox.vault.state import UnsealError, VaultCluster

__all__ = ["VaultCluster", "UnsealError", "make_app", "ReplicaServer", "serve_cluster"]
