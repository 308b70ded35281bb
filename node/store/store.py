"""The node store: one sqlite file per node, grouped into typed repositories."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Final

from node.store.attestations import Attestations
from node.store.blobs import Blobs
from node.store.chain import ChainCursor
from node.store.db import Database, Synchronous
from node.store.jobs import Jobs
from node.store.offers import Offers
from node.store.schema import SCHEMA_VERSION
from node.store.votes import Votes

__all__ = ["STORE_FILE", "Store"]

#: File name of the store inside the node's data directory.
STORE_FILE: Final = "node.sqlite"


class Store:
    """Persistence for one node.

    ``store.jobs``, ``store.offers``, ``store.blobs``, ``store.attestations``,
    ``store.votes`` and ``store.chain`` each own their tables; each method is one transaction, and
    ``with store.transaction():`` groups several calls into one.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous = "FULL",
        clock: Callable[[], float] = time.time,
        max_offers: int = 10_000,
        migrate_to: int = SCHEMA_VERSION,
    ) -> None:
        self.path = Path(path)
        self._db = Database(self.path, synchronous=synchronous, clock=clock, migrate_to=migrate_to)
        self.jobs = Jobs(self._db)
        self.offers = Offers(self._db, max_offers=max_offers)
        self.blobs = Blobs(self._db)
        self.attestations = Attestations(self._db)
        self.chain = ChainCursor(self._db)
        self.votes = Votes(self._db)

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        synchronous: Synchronous = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> Store:
        """The store of the node whose data directory is ``data_dir``."""
        return cls(Path(data_dir) / STORE_FILE, synchronous=synchronous, clock=clock)

    @property
    def schema_version(self) -> int:
        """The schema version of the open file."""
        return self._db.version

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[None]:
        """Group several store calls into one atomic commit (never await inside);
        ``durable=False``: see :meth:`node.store.db.Database.transaction`."""
        with self._db.transaction(durable=durable):
            yield

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
