"""The pure core: what a package, a version, a report, a repository index and an update
are, and the rules between them. No I/O through the web, a database or metrics (the
``pure`` import contract in setup.cfg enforces it): everything here is a function of
its arguments, so it is tested with plain values and fuzzed without servers."""
