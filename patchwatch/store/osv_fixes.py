"""The fixed versions the stored OSV records give one ecosystem (read by the apk refresh).

Why a module of its own: the vulnerability tables are the feeds' (``patchwatch.store.
vulns``); classifying Alpine updates as security needs only the ``fixed`` events of one
ecosystem's entries (``Alpine:v3.20``), read here without touching how the feeds store
or match them.
"""

from __future__ import annotations

from patchwatch.store.vuln_models import VulnAffected
from patchwatch.store.vuln_models import VulnRecord

__all__ = ["ecosystem_entries"]


def ecosystem_entries(ecosystem: str) -> list[tuple[str, str, str, str, str]]:
    """(record id, identities, summary, package, ranges JSON) of every entry of
    ``ecosystem`` in the stored records, in a stable order."""
    query = (
        VulnAffected.select(
            VulnRecord.record_id, VulnRecord.identities, VulnRecord.summary,
            VulnAffected.package, VulnAffected.ranges,
        )
        .join(VulnRecord, on=(VulnAffected.record == VulnRecord.id))
        .where(VulnAffected.ecosystem == ecosystem)
        .order_by(VulnRecord.record_id, VulnAffected.package, VulnAffected.id)
        .tuples()
    )  # fmt: skip
    return list(query)
