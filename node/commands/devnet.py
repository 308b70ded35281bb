"""``gpunet devnet up|down|status``: a local chain with the contracts, for trying gpunet out.

``up`` starts anvil detached (its own session, output in ``anvil.log``) on a
free loopback port, deploys the test token, the escrow and the verifier
committee (the escrow's resolver) with devnet parameters (those of
:class:`node.chain.devnet.Devnet`: short unbonding and challenge windows),
optionally funds an address with ETH and tokens, and writes ``devnet.json``
into the state directory (default ``.devnet`` in the current directory). The
state file holds the deployer's throwaway key (mode 0600) so that later
``up --fund`` calls can mint; it is a devnet key, never use it for anything
else. ``down`` stops the whole process group (SIGTERM, then SIGKILL) and
removes the state; ``status`` says whether it answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Final

import click

from node.commands.common import Failure, UserError, format_amount, parse_amount
from protocol.errors import IdentityError
from protocol.identity import checksum_address, parse_address

__all__ = ["devnet"]

STATE_FILE: Final = "devnet.json"
LOG_FILE: Final = "anvil.log"
DEFAULT_DIR: Final = Path(".devnet")
CHAIN_ID: Final = 31337
ETH_FUNDING: Final = 10**22  # wei given to a funded address (10,000 ETH)
DEFAULT_TOKENS: Final = 1000 * 10**18
_STARTUP_TIMEOUT_S: Final = 30.0
_STOP_TIMEOUT_S: Final = 5.0

dir_option = click.option(
    "--dir",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    envvar="GPUNET_DEVNET_DIR",
    help="Directory holding devnet.json and anvil.log.",
)


@click.group()
def devnet() -> None:
    """A local chain (anvil) with the token and escrow deployed."""


# ---------------------------------------------------------------- state and processes
def _read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}", "use another --dir") from None
    try:
        state = json.loads(raw[: 1 << 20])
        int(state["anvil_pid"])
        str(state["rpc_url"])
    except (ValueError, KeyError, TypeError):
        raise UserError(
            f"{path} is not a devnet state file", "remove it, or use another --dir"
        ) from None
    return dict(state)


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=2)
        fh.write("\n")
    tmp.replace(path)


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our own exited child (a test calling ``up`` in-process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) anvil process is left in process group ``pgid``.

    Only processes whose command line names anvil count, so a recycled pid
    never makes ``down`` signal someone else's processes.
    """
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if len(fields) < 3 or int(fields[2]) != pgid or fields[0] == "Z":
                continue
            if b"anvil" in (entry / "cmdline").read_bytes():
                return True
        except (OSError, IndexError, ValueError):
            continue
    return False


def _stop_group(pgid: int) -> None:
    if not _group_alive(pgid):
        return
    for sig, wait in ((signal.SIGTERM, _STOP_TIMEOUT_S), (signal.SIGKILL, _STOP_TIMEOUT_S)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.05)
    if _group_alive(pgid):
        raise Failure(f"anvil (process group {pgid}) did not stop", f"kill it: kill -9 -{pgid}")


def _answers(url: str) -> tuple[int, int] | None:
    """(chain id, block number) if the chain at ``url`` answers quickly, else None."""
    from node.chain.errors import ChainError
    from node.chain.rpc import RetryPolicy, Rpc

    rpc = Rpc(url, timeout=2.0)
    rpc.retry = RetryPolicy(attempts=1)
    try:
        return rpc.chain_id(), rpc.block_number()
    except ChainError:
        return None


def _snippet(state: dict[str, Any]) -> str:
    return (
        "[chain]\n"
        f'rpc_url = "{state["rpc_url"]}"\n'
        f"chain_id = {state['chain_id']}\n"
        f'escrow_address = "{state["escrow_address"]}"\n'
    )


def _find_anvil() -> str:
    from node.chain.anvil import find_anvil
    from node.chain.errors import ChainError

    try:
        return find_anvil()
    except ChainError:
        raise UserError("anvil is not installed", "run scripts/bootstrap.sh (npm ci)") from None


def _start_anvil(state_dir: Path, binary: str) -> tuple[subprocess.Popen[bytes], str, int]:
    from node.chain.anvil import free_port

    port = free_port()
    log_path = state_dir / LOG_FILE
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(CHAIN_ID)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    try:
        while _answers(url) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-300:].strip().replace("\n", " | ")
                raise Failure(f"anvil did not start: {tail or 'no output'}", f"see {log_path}")
            time.sleep(0.1)
    except BaseException:  # a failed start, Ctrl-C or SIGTERM: no anvil left behind
        _stop_group(proc.pid)
        proc.wait()
        raise
    return proc, url, port


def _fund(state: dict[str, Any], address: bytes, amount: int) -> None:
    from node.chain.deploy import Token
    from node.chain.rpc import Rpc, Signer

    rpc = Rpc(str(state["rpc_url"]))
    rpc.request("anvil_setBalance", ["0x" + address.hex(), hex(ETH_FUNDING)])
    deployer = Signer(rpc, bytes.fromhex(str(state["deployer_key"]).removeprefix("0x")))
    token = Token(deployer, parse_address(str(state["token_address"])))
    token.mint(address, amount)
    click.echo(
        f"funded {checksum_address(address)}: {ETH_FUNDING // 10**18} ETH, "
        f"{format_amount(amount)} minted"
    )


def _parse_fund(fund: str | None, amount_text: str | None) -> tuple[bytes | None, int]:
    amount = DEFAULT_TOKENS if amount_text is None else parse_amount(amount_text)
    if fund is None:
        if amount_text is not None:
            raise UserError("--amount needs --fund", "e.g. --fund 0xYourAddress --amount 100e18")
        return None, amount
    try:
        return parse_address(fund.strip()), amount
    except IdentityError as exc:
        raise UserError(
            f"--fund: {fund[:60]!r} is not an address ({exc})",
            "print yours with: gpunet keys export-address",
        ) from None


# ---------------------------------------------------------------- commands
@devnet.command("up")
@dir_option
@click.option("--fund", metavar="0xADDRESS", help="Give this address ETH and minted tokens.")
@click.option(
    "--amount", metavar="N", help="Tokens (base units) minted for --fund; default 1000e18."
)
def up(state_dir: Path, fund: str | None, amount: str | None) -> None:
    """Start anvil, deploy the token and escrow, print the [chain] config."""
    address, tokens = _parse_fund(fund, amount)  # bad input fails before anything starts
    state = _read_state(state_dir)
    if state is not None:
        if _group_alive(int(state["anvil_pid"])) and _answers(str(state["rpc_url"])):
            click.echo(f"devnet already running at {state['rpc_url']} (pid {state['anvil_pid']})")
            if address is not None:
                _fund(state, address, tokens)
            click.echo("\n" + _snippet(state), nl=False)
            return
        click.echo(f"removing the stale state of a devnet that is gone ({state['rpc_url']})")
        if _group_alive(int(state["anvil_pid"])):
            _stop_group(int(state["anvil_pid"]))
        (state_dir / STATE_FILE).unlink(missing_ok=True)
    binary = _find_anvil()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create {state_dir}: {exc.strerror or exc}", "use another --dir"
        ) from None
    proc, url, port = _start_anvil(state_dir, binary)
    try:
        from node.chain.devnet import Devnet

        net = Devnet(url)
        committee = net.deploy_committee()  # the escrow's resolver: gpunet verify needs it
        state = {
            "rpc_url": url,
            "port": port,
            "chain_id": net.rpc.chain_id(),
            "anvil_pid": proc.pid,
            "log_file": str((state_dir / LOG_FILE).resolve()),
            "token_address": checksum_address(net.token.address),
            "escrow_address": checksum_address(net.escrow.address),
            "committee_address": checksum_address(committee.address),
            "deployer_key": "0x" + bytes(net.deployer.account.key).hex(),
            "params": {
                "min_stake": net.params.min_stake,
                "unbonding_delay_s": net.params.unbonding_delay,
                "challenge_window_s": net.params.challenge_window,
                "challenge_bond": net.params.challenge_bond,
                "slash_amount": net.params.slash_amount,
                "refund_penalty": net.params.refund_penalty,
            },
            "started_at": int(time.time()),
        }
        _write_state(state_dir, state)
    except BaseException:
        _stop_group(proc.pid)
        proc.wait()
        raise
    click.echo(f"devnet up at {url} (chain id {state['chain_id']}, anvil pid {proc.pid})")
    click.echo(f"token      {state['token_address']}")
    click.echo(f"escrow     {state['escrow_address']}")
    click.echo(f"committee  {state['committee_address']} (for gpunet verify)")
    click.echo(f"state      {state_dir / STATE_FILE}")
    if address is not None:
        _fund(state, address, tokens)
    click.echo("\nadd to gpunet.toml:\n\n" + _snippet(state), nl=False)


@devnet.command("down")
@dir_option
def down(state_dir: Path) -> None:
    """Stop anvil and remove the devnet state."""
    state = _read_state(state_dir)
    if state is None:
        click.echo(f"no devnet in {state_dir}; nothing to stop")
        return
    pid = int(state["anvil_pid"])
    if _group_alive(pid):
        _stop_group(pid)
        click.echo(f"stopped anvil (pid {pid}) at {state['rpc_url']}")
    else:
        click.echo(f"anvil (pid {pid}) was not running")
    (state_dir / STATE_FILE).unlink(missing_ok=True)


@devnet.command("status")
@dir_option
@click.pass_context
def status(ctx: click.Context, state_dir: Path) -> None:
    """Say whether the devnet answers (exit status 1 when it does not)."""
    state = _read_state(state_dir)
    if state is None:
        click.echo(f"no devnet in {state_dir} (start one with: gpunet devnet up)")
        ctx.exit(1)
    assert state is not None
    alive = _group_alive(int(state["anvil_pid"]))
    answer = _answers(str(state["rpc_url"])) if alive else None
    if answer is None:
        click.echo(
            f"devnet at {state['rpc_url']} does not answer "
            f"(anvil pid {state['anvil_pid']} {'running' if alive else 'gone'})"
        )
        ctx.exit(1)
    assert answer is not None
    chain_id, block = answer
    click.echo(f"devnet at {state['rpc_url']} answers: chain id {chain_id}, block {block}")
    click.echo(f"token      {state.get('token_address')}")
    click.echo(f"escrow     {state.get('escrow_address')}")
    if "committee_address" in state:  # a devnet made before the committee was deployed lacks it
        click.echo(f"committee  {state['committee_address']}")
