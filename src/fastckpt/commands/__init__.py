"""One module per CLI subcommand; see fastckpt.cli for the contract."""
