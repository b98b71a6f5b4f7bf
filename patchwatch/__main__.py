"""``python -m patchwatch``: the operator's command line, as the ``patchwatch`` script runs it."""

from patchwatch.cli.main import run

run()
