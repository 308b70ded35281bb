"""A ``gpunet`` command run as a separate OS process on its own home, for e2e tests
that kill (SIGKILL) and restart real nodes: config, keystore, data dir and log live in
``home``; a restart reuses all of them."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from node.chain.deploy import EscrowParams
from node.chain.devnet import TOKEN, Actor, Devnet
from node.keys import create_keystore
from protocol.identity import checksum_address

PASSWORD = "e2e-node-process"

#: Escrow parameters of the process-level e2e devnets: a 4 s challenge window, so a job
#: left open for verifiers finalizes within a test.
PROCESS_ESCROW = EscrowParams(
    resolver=b"",
    min_stake=100 * TOKEN,
    unbonding_delay=1000,
    challenge_window=4,
    challenge_bond=10 * TOKEN,
    slash_amount=50 * TOKEN,
    refund_penalty=5 * TOKEN,
)


@dataclasses.dataclass
class NodeProcess:
    """One ``python -m node.cli <args>`` process; its output goes to ``home/node.log``."""

    home: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    offset: int = 0

    @classmethod
    def make(
        cls,
        home: Path,
        devnet: Devnet,
        actor: Actor,
        args: list[str],
        extra: str,
        *,
        poll_interval_s: float = 0.05,
    ) -> Self:
        """Write ``home``'s keystore (``actor``'s key) and a config for ``devnet`` plus
        ``extra`` TOML sections; ``args`` is the command (``--config`` is appended)."""
        home.mkdir(parents=True, exist_ok=True)
        create_keystore(home / "keystore.json", PASSWORD, identity=actor.identity, scrypt_n=2**12)
        (home / "gpunet.toml").write_text(
            f'[node]\ndata_dir = "{home}"\nkeystore = "keystore.json"\nlog_level = "warning"\n'
            f'[chain]\nrpc_url = "{devnet.rpc.url}"\nchain_id = {devnet.escrow.domain.chain_id}\n'
            f'escrow_address = "{checksum_address(devnet.escrow.address)}"\n'
            f"poll_interval_s = {poll_interval_s}\n" + extra
        )
        return cls(home, [*args, "--config", str(home / "gpunet.toml")])

    def start(self, marker: str = "ready:", within: float = 120.0) -> None:
        """Start the process; wait until this run prints ``marker``."""
        with (self.home / "node.log").open("ab") as log:
            self.offset = log.tell()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node.cli", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "GPUNET_PASSWORD": PASSWORD},
            )
        deadline = time.monotonic() + within
        while marker not in self.log():
            assert self.proc.poll() is None, self.log()[-3000:]
            assert time.monotonic() < deadline, f"no {marker!r}: {self.log()[-3000:]}"
            time.sleep(0.1)

    def log(self) -> str:
        """What the current run printed."""
        with (self.home / "node.log").open("rb") as fh:
            fh.seek(self.offset)
            return fh.read().decode(errors="replace")

    def printed(self, prefix: str) -> str:
        """The last word of the last line that starts with ``prefix``."""
        return [ln for ln in self.log().splitlines() if ln.startswith(prefix)][-1].split()[1]

    @property
    def token(self) -> str:
        """The API token the node wrote."""
        return (self.home / "api.token").read_text().strip()

    def kill(self) -> None:
        """SIGKILL, no chance to clean up (what a crash or an OOM kill does)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
