"""A local chain with the contracts deployed and funded accounts (tests, gas bench, demo).

:class:`Devnet` wraps a running anvil: it deploys the TestToken and the escrow,
creates accounts on demand (fresh keys, funded with ETH via ``anvil_setBalance``
and with tokens deposited into the escrow), controls time, takes snapshots, and
drives jobs through the lifecycle with offers and attestations signed by
``protocol.messages`` exactly as nodes sign them.
"""

from __future__ import annotations

import dataclasses
import hashlib

from node.chain.deploy import EscrowParams, Token, deploy_escrow, deploy_test_token
from node.chain.escrow import Escrow, NewJob, ResultArgs
from node.chain.jobs import Job
from node.chain.rpc import Rpc, Signer, parse_quantity
from protocol.identity import Identity
from protocol.messages import Attestation, Capabilities, Determinism, JobFormat, Offer

CAPABILITIES = Capabilities(
    device_class="cpu",
    gpu_model="",
    gpu_memory_mib=0,
    gpu_count=0,
    sandbox_tier=1,
    formats=(JobFormat.CATALOG_V1,),
    determinism=(Determinism.EXACT,),
    runtimes=("torch-2.13.0-cpu",),
    max_job_bytes=1 << 30,
)
RUNTIME = "torch-2.13.0+cpu/catalog-1/exact"
TOKEN = 10**18


@dataclasses.dataclass
class Actor:
    """An account: identity (signs offers/attestations) and escrow handle (sends txs)."""

    identity: Identity
    signer: Signer
    escrow: Escrow
    next_nonce: int = 0

    @property
    def address(self) -> bytes:
        """20-byte address."""
        return self.identity.address


class Devnet:
    """Contracts on a running chain plus helpers to drive them."""

    def __init__(self, url: str, params: EscrowParams | None = None) -> None:
        self.rpc = Rpc(url)
        self.deployer = self._funded_signer(Identity.generate())
        resolver_id = Identity.generate()
        resolver_signer = self._funded_signer(resolver_id)
        self.token: Token = deploy_test_token(self.deployer)
        base = params or EscrowParams(
            resolver=b"",
            min_stake=100 * TOKEN,
            unbonding_delay=1000,
            challenge_window=100,
            challenge_bond=10 * TOKEN,
            slash_amount=50 * TOKEN,
            refund_penalty=5 * TOKEN,
        )
        self.params = dataclasses.replace(base, resolver=resolver_id.address)
        self.escrow: Escrow = deploy_escrow(self.deployer, self.token.address, self.params)
        self.resolver = Actor(
            resolver_id, resolver_signer, self.escrow.with_signer(resolver_signer)
        )
        self.actors: list[Actor] = [self.resolver]
        self._lane = 0

    # ------------------------------------------------------------ accounts
    def _funded_signer(self, ident: Identity) -> Signer:
        self.rpc.request("anvil_setBalance", ["0x" + ident.address.hex(), hex(10**24)])
        return Signer(self.rpc, ident.private_key)

    def actor(self, *, deposit: int = 1000 * TOKEN, stake: int = 0) -> Actor:
        """A fresh funded account with ``deposit`` tokens in the escrow, ``stake`` staked."""
        ident = Identity.generate()
        signer = self._funded_signer(ident)
        a = Actor(ident, signer, self.escrow.with_signer(signer))
        self.actors.append(a)
        total = deposit + stake
        if total:
            token = self.token.with_signer(a.signer)
            token.mint(a.address, total)
            token.approve(self.escrow.address, total)
            a.escrow.deposit(total)
        if stake:
            a.escrow.stake(stake)
        return a

    def provider(self) -> Actor:
        """An account staked at the minimum."""
        return self.actor(deposit=0, stake=self.params.min_stake)

    # ------------------------------------------------------------ chain control
    def now(self) -> int:
        """Timestamp of the latest block."""
        return int(self.rpc.block("latest")["timestamp"])

    def warp(self, seconds: int) -> None:
        """Mine a block ``seconds`` after the latest one."""
        self.rpc.request("evm_setNextBlockTimestamp", [self.now() + seconds])
        self.rpc.request("evm_mine", [])

    def snapshot(self) -> str:
        """``evm_snapshot`` id."""
        return str(self.rpc.request("evm_snapshot", []))

    def revert(self, snap: str) -> None:
        """``evm_revert`` and resync every account's nonce counter."""
        if self.rpc.request("evm_revert", [snap]) is not True:
            raise RuntimeError(f"evm_revert({snap}) failed")
        self.deployer.nonces.resync()
        for a in self.actors:
            a.signer.nonces.resync()

    def token_balance_of_escrow(self) -> int:
        """Token balance held by the escrow contract."""
        return self.token.balance_of(self.escrow.address)

    def block_number(self) -> int:
        """Latest block number."""
        return parse_quantity(self.rpc.request("eth_blockNumber", []), "blockNumber")

    # ------------------------------------------------------------ signed messages
    def offer(
        self,
        provider: Actor,
        *,
        price: int = TOKEN // 100,
        client: bytes = bytes(20),
        expiry_in: int = 3600,
        nonce: int | None = None,
    ) -> Offer:
        """A fresh offer signed by ``provider`` (next unused nonce unless given)."""
        if nonce is None:
            nonce = provider.next_nonce
            provider.next_nonce += 1
        return Offer.create(
            provider.identity,
            chain_id=self.rpc.chain_id(),
            contract=self.escrow.address,
            price_per_gpu_second=price,
            nonce=nonce,
            expiry=self.now() + expiry_in,
            capabilities=CAPABILITIES,
            client=client,
        )

    def new_job(
        self,
        offer: Offer,
        *,
        max_payment: int = 10 * TOKEN,
        deadline_in: int = 600,
        spec: bytes = b"spec",
        lane: int | None = None,
    ) -> NewJob:
        """createJob arguments for ``offer`` (a never-used lane unless given)."""
        if lane is None:
            lane = self._lane
            self._lane += 1
        return NewJob(
            offer=offer.signed_data(),
            offer_sig=offer.signature,
            spec_hash=hashlib.sha256(spec).digest(),
            max_payment=max_payment,
            deadline=self.now() + deadline_in,
            lane=lane,
        )

    def attestation(
        self,
        provider: Actor,
        job: Job,
        *,
        output: bytes = b"output",
        metered_millis: int = 1500,
        runtime: str = RUNTIME,
    ) -> Attestation:
        """An attestation for ``job`` signed by ``provider``."""
        return Attestation.create(
            provider.identity,
            chain_id=self.rpc.chain_id(),
            contract=self.escrow.address,
            job_id=job.job_id,
            spec_hash=job.spec_hash,
            output_hash=hashlib.sha256(output).digest(),
            runtime=runtime,
            determinism=Determinism.EXACT,
            metered_millis=metered_millis,
        )

    @staticmethod
    def result_args(job: Job, att: Attestation) -> ResultArgs:
        """submitResult arguments for a signed attestation."""
        return ResultArgs(
            job=job,
            output_hash=att.output_hash,
            runtime_id=att.runtime_id,
            determinism=int(att.determinism),
            metered_millis=att.metered_millis,
            sig=att.signature,
        )

    # ------------------------------------------------------------ lifecycle shortcuts
    def create(
        self,
        client: Actor,
        provider: Actor,
        *,
        max_payment: int = 10 * TOKEN,
        deadline_in: int = 600,
        lane: int | None = None,
    ) -> Job:
        """Match a job between ``client`` and ``provider``."""
        offer = self.offer(provider)
        new = self.new_job(offer, max_payment=max_payment, deadline_in=deadline_in, lane=lane)
        job, _ = client.escrow.create_job(new)
        return job

    def submit(self, provider: Actor, job: Job, *, metered_millis: int = 1500) -> Job:
        """Record a signed result for a matched job."""
        att = self.attestation(provider, job, metered_millis=metered_millis)
        submitted, _ = provider.escrow.submit_result(self.result_args(job, att))
        return submitted
