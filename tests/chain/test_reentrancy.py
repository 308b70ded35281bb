"""A hostile token that calls back into the escrow during transfers is refused."""

from __future__ import annotations

import pytest

from node.chain import errors as E
from node.chain.abi import Abi
from node.chain.artifacts import load_artifact
from node.chain.deploy import Token, deploy_contract, deploy_escrow
from node.chain.devnet import Devnet
from node.chain.escrow import Escrow


def test_deposit_and_withdraw_refuse_reentry(net: Devnet) -> None:
    user = net.actor(deposit=0)
    hostile_abi = Abi(load_artifact("ReentrantToken").abi)
    token_addr = deploy_contract(user.signer, "ReentrantToken", (), ())
    token = Token(user.signer, token_addr)
    escrow: Escrow = deploy_escrow(user.signer, token_addr, net.params)
    token.mint(user.address, 100)
    token.approve(escrow.address, 100)
    escrow.deposit(50)  # unarmed: a normal token

    def arm(data: bytes) -> None:
        call = hostile_abi.functions["arm"].encode("0x" + escrow.address.hex(), data)
        receipt = user.signer.wait(user.signer.send(token_addr, call, gas=200_000))
        assert receipt.status == 1

    arm(Escrow.abi.functions["withdraw"].encode(1))
    with pytest.raises(E.ReentrancyGuardReentrantCall):
        escrow.deposit(10)
    arm(Escrow.abi.functions["deposit"].encode(1))
    with pytest.raises(E.ReentrancyGuardReentrantCall):
        escrow.withdraw(10)
    arm(b"")
    escrow.withdraw(10)
    assert escrow.balance_of(user.address) == 40
    assert token.balance_of(escrow.address) == 40
