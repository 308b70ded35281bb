"""Subcommands of ``gpunet`` beyond ``keys``: provider, market, money and devnet."""
