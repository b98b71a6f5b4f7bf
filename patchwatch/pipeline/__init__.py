"""The pipeline: from a stored report to host state (processing), from mirrors to
stored indexes (fetch, refresh), from both to pending updates (update computation),
and the follow-up that runs them for what just changed. Each step reads and writes
through the store and decides with the pure core."""
