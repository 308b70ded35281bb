"""Deploy the payment token (test/devnet only) and the escrow; ERC-20 wrapper."""

from __future__ import annotations

import dataclasses

from eth_abi.abi import encode as abi_encode

from node.chain.abi import Abi
from node.chain.artifacts import load_artifact
from node.chain.errors import ChainError
from node.chain.escrow import Escrow, TxResult
from node.chain.rpc import Signer

DEPLOY_GAS = 8_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class EscrowParams:
    """Constructor parameters of GpunetEscrow (token units and seconds)."""

    resolver: bytes
    min_stake: int = 100 * 10**18
    unbonding_delay: int = 7 * 24 * 3600
    challenge_window: int = 3600
    challenge_bond: int = 10 * 10**18
    slash_amount: int = 50 * 10**18
    refund_penalty: int = 5 * 10**18


def deploy_contract(
    signer: Signer, name: str, ctor_types: tuple[str, ...], args: tuple[object, ...]
) -> bytes:
    """Deploy an artifact; returns the new contract's address."""
    art = load_artifact(name)
    data = art.bytecode + abi_encode(list(ctor_types), list(args))
    receipt = signer.transact(None, data, gas=DEPLOY_GAS)
    if receipt.status != 1 or receipt.contract_address is None:
        raise ChainError(f"deploying {name} failed (tx 0x{receipt.tx_hash.hex()})")
    return receipt.contract_address


class Token:
    """An ERC-20 (the TestToken adds ``mint``)."""

    abi = Abi(load_artifact("TestToken").abi)

    def __init__(self, signer: Signer, address: bytes) -> None:
        self.signer = signer
        self.address = address

    def with_signer(self, signer: Signer) -> Token:
        """The same token driven by another account."""
        return Token(signer, self.address)

    def _send(self, name: str, *args: object) -> TxResult:
        data = self.abi.functions[name].encode(*args)
        receipt = self.signer.transact(self.address, data, gas=120_000)
        if receipt.status != 1:
            raise ChainError(f"token {name} failed")
        return TxResult(receipt, ())

    def mint(self, to: bytes, amount: int) -> TxResult:
        """Mint (TestToken only)."""
        return self._send("mint", "0x" + to.hex(), amount)

    def approve(self, spender: bytes, amount: int) -> TxResult:
        """Approve ``spender``."""
        return self._send("approve", "0x" + spender.hex(), amount)

    def transfer(self, to: bytes, amount: int) -> TxResult:
        """Transfer."""
        return self._send("transfer", "0x" + to.hex(), amount)

    def balance_of(self, account: bytes) -> int:
        """Token balance."""
        fn = self.abi.functions["balanceOf"]
        raw = self.signer.rpc.call(self.address, fn.encode("0x" + account.hex()))
        return int(fn.decode(raw)[0])


def deploy_test_token(signer: Signer, name: str = "gpunet test USD", symbol: str = "gUSD") -> Token:
    """Deploy a mintable TestToken."""
    art_types = Token.abi.constructor_inputs
    return Token(signer, deploy_contract(signer, "TestToken", art_types, (name, symbol)))


def deploy_escrow(signer: Signer, token: bytes, params: EscrowParams) -> Escrow:
    """Deploy GpunetEscrow; ``signer`` becomes its owner."""
    args = (
        "0x" + token.hex(),
        "0x" + params.resolver.hex(),
        params.min_stake,
        params.unbonding_delay,
        params.challenge_window,
        params.challenge_bond,
        params.slash_amount,
        params.refund_penalty,
    )
    address = deploy_contract(signer, "GpunetEscrow", Escrow.abi.constructor_inputs, args)
    return Escrow(signer.rpc, address, signer)
