from patchwatch.cli.main import run

run()
