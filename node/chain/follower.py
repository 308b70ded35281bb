"""Event follower: escrow events in chain order, resumable, tolerant of shallow reorgs.

The follower keeps a *cursor* — the number and hash of the last block it fully
processed — in a :class:`CursorStore` supplied by the caller (the node's sqlite
store implements the same two methods; :class:`MemoryCursorStore` and
:class:`JsonCursorStore` are provided until then). Each :meth:`EventFollower.poll`:

1. checks that the cursor block is still canonical. If its hash changed, a
   reorg happened: the follower rewinds ``reorg_depth`` blocks, calls
   ``on_rollback(block)`` so the consumer can discard everything it derived
   from later blocks, and re-reads from there. If it still knows the hash of
   the rewind point and that changed too, the reorg is deeper than configured
   and :class:`ReorgTooDeep` is raised (nothing is processed);
2. reads logs up to ``head - confirmations`` in ranges of ``max_range``
   blocks, checking that the range's last block hash is the same before and
   after ``eth_getLogs`` (else the range is retried), and saves the cursor
   after each range.

With ``confirmations >= reorg_depth`` a consumer never sees an event that is
later reorganised away; with ``confirmations = 0`` it sees events at once and
relies on ``on_rollback``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from node.chain.errors import ChainError, RpcError
from node.chain.escrow import Escrow, EventRecord


@dataclasses.dataclass(frozen=True, slots=True)
class Cursor:
    """Last fully processed block."""

    block_number: int
    block_hash: bytes


class CursorStore(Protocol):
    """Where the follower keeps its cursor."""

    def load(self) -> Cursor | None:
        """The saved cursor, or None before the first save."""

    def save(self, cursor: Cursor) -> None:
        """Persist ``cursor`` (durably, before returning)."""


class MemoryCursorStore:
    """A cursor kept in memory (tests, throwaway followers)."""

    def __init__(self) -> None:
        self.cursor: Cursor | None = None

    def load(self) -> Cursor | None:
        """The saved cursor."""
        return self.cursor

    def save(self, cursor: Cursor) -> None:
        """Remember ``cursor``."""
        self.cursor = cursor


class JsonCursorStore:
    """A cursor in a small JSON file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Cursor | None:
        """The saved cursor (None if the file does not exist)."""
        if not self.path.exists():
            return None
        raw = json.loads(self.path.read_text())
        number, digest = raw["block_number"], raw["block_hash"]
        if not isinstance(number, int) or number < 0 or not isinstance(digest, str):
            raise ChainError(f"{self.path}: malformed cursor")
        return Cursor(number, bytes.fromhex(digest))

    def save(self, cursor: Cursor) -> None:
        """Write the cursor (fsync + rename)."""
        data = json.dumps(
            {"block_number": cursor.block_number, "block_hash": cursor.block_hash.hex()}
        )
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".cursor")
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(self.path)


_MAX_UNSTABLE_READS = 5


class ReorgTooDeep(ChainError):
    """The chain reorganised deeper than the follower's configured depth."""


class EventFollower:
    """Follows one escrow's events from a stored cursor."""

    def __init__(
        self,
        escrow: Escrow,
        store: CursorStore,
        *,
        start_block: int = 0,
        confirmations: int = 0,
        reorg_depth: int = 12,
        max_range: int = 2000,
        on_rollback: Callable[[int], None] | None = None,
    ) -> None:
        if confirmations < 0 or reorg_depth < 1 or max_range < 1 or start_block < 0:
            raise ValueError("bad follower configuration")
        self.escrow = escrow
        self.store = store
        self.start_block = start_block
        self.confirmations = confirmations
        self.reorg_depth = reorg_depth
        self.max_range = max_range
        self.on_rollback = on_rollback
        self._known: dict[int, bytes] = {}  # block number -> hash we processed it at

    def _hash_at(self, number: int) -> bytes:
        return bytes(self.escrow.rpc.block(number)["hash"])

    def _remember(self, number: int, digest: bytes) -> None:
        self._known[number] = digest
        if len(self._known) > 4 * self.reorg_depth + 16:
            for n in sorted(self._known)[: len(self._known) - 2 * self.reorg_depth]:
                del self._known[n]

    def _check_reorg(self, cursor: Cursor) -> Cursor:
        if self._hash_at(cursor.block_number) == cursor.block_hash:
            return cursor
        rewind = max(cursor.block_number - self.reorg_depth, self.start_block - 1)
        if rewind >= 0:
            digest = self._hash_at(rewind)
            known = self._known.get(rewind)
            if known is not None and known != digest:
                raise ReorgTooDeep(
                    f"block {rewind} changed too: reorg deeper than {self.reorg_depth} blocks"
                )
            new = Cursor(rewind, digest)
        else:
            new = Cursor(-1, b"")
        for n in [n for n in self._known if n > rewind]:
            del self._known[n]
        if self.on_rollback is not None:
            self.on_rollback(new.block_number)
        self.store.save(new)
        return new

    def poll(self) -> list[EventRecord]:
        """Process every new confirmed block; returns their escrow events in order."""
        rpc = self.escrow.rpc
        cursor = self.store.load() or Cursor(self.start_block - 1, b"")
        if cursor.block_number >= 0 and cursor.block_hash:
            cursor = self._check_reorg(cursor)
        target = rpc.block_number() - self.confirmations
        events: list[EventRecord] = []
        frm = cursor.block_number + 1
        unstable = 0
        while frm <= target:
            to = min(frm + self.max_range - 1, target)
            before = self._hash_at(to)
            logs = rpc.get_logs(self.escrow.address, frm, to)
            after = self._hash_at(to)
            if before != after or any(
                lg.block_number == to and lg.block_hash != after for lg in logs
            ):
                unstable += 1  # the range changed under us: read it again
                if unstable > _MAX_UNSTABLE_READS:
                    raise ChainError(f"blocks {frm}..{to} keep changing; is the node syncing?")
                continue
            for lg in logs:
                if lg.removed or lg.address != self.escrow.address or not lg.topics:
                    continue
                if not frm <= lg.block_number <= to:
                    raise RpcError(f"eth_getLogs returned block {lg.block_number} outside range")
                ev = self.escrow.abi.events_by_topic.get(lg.topics[0])
                if ev is not None:
                    fields = ev.decode(lg.topics[1:], lg.data)
                    events.append(EventRecord(ev.name, fields, lg.block_number, lg.log_index))
            self._remember(to, after)
            self.store.save(Cursor(to, after))
            frm = to + 1
        return events
