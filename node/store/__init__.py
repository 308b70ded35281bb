"""Node persistence (sqlite via sqlite-utils, WAL): jobs, history, offers, blobs,
attestations, the chain cursor and a verifier's committee votes.

See :class:`Store` and docs/architecture.md.
"""

from node.store.records import (
    BlobRecord,
    Cursor,
    HistoryEntry,
    Job,
    NewJob,
    OfferRecord,
    Role,
    StoredAttestation,
    StoredVote,
    StoreError,
)
from node.store.schema import SCHEMA_VERSION, SchemaError
from node.store.store import STORE_FILE, Store

__all__ = [
    "SCHEMA_VERSION",
    "STORE_FILE",
    "BlobRecord",
    "Cursor",
    "HistoryEntry",
    "Job",
    "NewJob",
    "OfferRecord",
    "Role",
    "SchemaError",
    "Store",
    "StoreError",
    "StoredAttestation",
    "StoredVote",
]
