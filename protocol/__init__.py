"""gpunet protocol: pure, sans-I/O definitions shared by every node role.

Message types and their canonical encoding, EIP-712 structs, the job lifecycle
table, content ids, pricing arithmetic and identity derivation. Nothing here
opens a socket, touches the chain or imports torch; SPEC.md is the reference.
"""

__version__ = "0.1.0"
