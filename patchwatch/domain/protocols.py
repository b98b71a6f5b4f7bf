"""The names of the ways a report comes in, as stored with each report and host.

One place for them: the parsers stamp them on the records they build, the receiver
labels its counters with them, and processing picks a stored report's parser by them.
"""

from __future__ import annotations

NATIVE = "patchwatch/1"  # the patchwatch agent's JSON report
PATCHMAN1 = "patchman/1"  # Patchman's form upload
PATCHMAN2 = "patchman/2"  # Patchman's JSON report
PROTOCOLS = (NATIVE, PATCHMAN1, PATCHMAN2)
