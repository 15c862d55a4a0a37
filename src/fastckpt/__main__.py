"""`python -m fastckpt` runs the CLI (also how `torchrun -m fastckpt` reaches it)."""

from .cli import console_main

console_main()
