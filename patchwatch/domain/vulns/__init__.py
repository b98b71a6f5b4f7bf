"""Vulnerability feeds and matching, as pure functions (no database, HTTP or metrics yet).

Why a package of its own: vulnerabilities come from several feeds in several formats,
and each job is small enough to test on its own against real data:

- ``archive``: a zip, tarball or folder of records, read with member-count, size and
  path checks;
- ``osv``: OSV records, schema-checked, into ``model.Record``;
- ``debian_tracker``: Debian's security tracker JSON, per source package and release;
- ``kev``: CISA's Known Exploited Vulnerabilities catalogue;
- ``epss``: FIRST's EPSS daily scores;
- ``severity``: CVSS vectors scored (the ``cvss`` package) and distributions' ratings;
- ``identity``: records about one vulnerability merged under one id (its CVE);
- ``ecosystems``: each ecosystem's version ordering, and the OS -> ecosystem mapping;
- ``match``: is an installed version affected, which version fixes it, is it on offer.

Fetching, storage, scheduling, metrics, CLI and API come later (docs/vulnerabilities.md
says what is wired and what is not).
"""
