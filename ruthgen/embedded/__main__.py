"""``python -m ruthgen.embedded --repository model_repository``: serve a repository until Ctrl-C."""

from ruthgen.embedded.commands import main

main()
