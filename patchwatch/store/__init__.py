"""The store: the database, its models and migrations, and the named reads and writes
every process shares (package sets, queries, tokens, locks, job runs, health). It
knows the pure core and the database; it never fetches from the web and never calls
the pipeline."""
