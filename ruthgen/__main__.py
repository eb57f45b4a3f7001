"""``python -m ruthgen``: the generator's commands alone (no sidecar needed)."""

from ruthgen.cli import main

main()
