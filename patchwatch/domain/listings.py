"""The fields of every listing the CLI and the API export, in order (pure).

They are the CSV header, the same whether or not there are rows, so that a script
reading an empty export sees the same columns as a full one. Nested lists of objects
(a repository's mirrors) stay in JSON. tests/test_listings.py checks each tuple
against the keys the listing's rows really carry: a field added to a listing's rows
must be added here too.
"""

from __future__ import annotations

HOSTS = (
    "name", "os", "os_family", "arch", "kernel", "tags", "packages", "security_updates",
    "other_updates", "held_updates", "updates_state", "updates_reason", "updates_computed_at",
    "reboot_required", "last_report_at", "oldest_security_first_seen_at", "maintenance_until",
)  # fmt: skip
PACKAGE_HOSTS = (
    "host", "name", "epoch", "version", "release", "arch", "type", "version_string",
    "repositories",
)  # fmt: skip
REPOSITORY_SUMMARIES = ("id", "key", "kind", "name", "arch", "security", "enabled", "hosts")
REPOSITORIES = (
    "id", "key", "label", "kind", "name", "arch", "security", "security_mode", "enabled",
    "auth_required", "hosts", "mirrors", "failing_mirrors", "last_success_at",
)  # fmt: skip
PENDING_UPDATES = (
    "name", "arch", "installed", "available", "security", "held", "hosts", "first_seen_at",
)  # fmt: skip
ATTENTION = ("issue", "subject", "detail", "since")
ORPHANS = ("host", "name", "version", "arch")
POSSIBLE_MIRRORS = ("group", "id", "key", "label", "kind", "hosts", "mirrors", "reason")
OS_RELEASES = (
    "id", "name", "family", "version", "codename", "hosts", "hosts_using_os_repositories",
    "repositories",
)  # fmt: skip
DBCHECK = ("check", "found", "fixed", "detail")
TOKENS = (
    "prefix", "kind", "host", "state", "comment", "created_at", "last_used_at", "expires_at",
    "revoked_at",
)  # fmt: skip
REVERSE_DNS = (
    "name", "reverse_dns_status", "reverse_dns_address", "reverse_dns_name",
    "reverse_dns_checked_at", "detail",
)  # fmt: skip
