"""gpunet node: everything that does I/O (chain, p2p, runtime, store, API) and the three roles."""

__version__ = "0.1.0"
