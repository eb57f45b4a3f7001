"""``python -m ruthstack``: the ``ruthgen`` console script."""

from ruthstack.cli import main

main()
