"""``python -m registry.cli``: the same entry point as the ``registry`` script."""

from registry.cli import main

main()
