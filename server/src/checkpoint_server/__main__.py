"""``python -m checkpoint_server``."""

from checkpoint_server.cli import main

main()
