"""Chain client: deploy the escrow, typed calls, errors, nonces, receipts, events.

Layers, bottom up:

* :mod:`node.chain.abi` — selectors and ``eth_abi`` encoding from the committed
  artifacts (no web3 ``Contract`` objects on hot paths);
* :mod:`node.chain.errors` — custom errors decoded into typed exceptions;
* :mod:`node.chain.rpc` — validated JSON-RPC, retries with backoff, local
  signing, a nonce manager, tight receipt polling;
* :mod:`node.chain.escrow` — one typed method per contract function;
* :mod:`node.chain.follower` — event follower with a stored block cursor and
  reorg tolerance;
* :mod:`node.chain.jobs` — the ``Job`` struct rebuilt from events, lane pool;
* :mod:`node.chain.deploy` — deploying the token and the escrow;
* :mod:`node.chain.anvil`, :mod:`node.chain.devnet` — a local chain with the
  contracts deployed, for tests, benchmarks and the demo.
"""
