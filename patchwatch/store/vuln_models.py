"""The vulnerability tables: feeds' records, per-source state, per-set findings.

Why a module of their own: these tables are written by the feed refresh and the
vulnerability computation only, and read by the exporter and operator views; keeping
them apart from ``patchwatch.store.models`` keeps that module about hosts and packages.
Migration 17 (``patchwatch.store.migrations``) creates them.

- :class:`VulnSource`: one row per feed read (``osv:Debian:12``, ``debian_tracker``,
  ``kev``, ``epss``): its validators for conditional requests, the digest of the last
  good content (an unchanged feed is skipped), outcome counters and the change flag.
- :class:`VulnRecord` and :class:`VulnAffected`: what a source's last good data says,
  one row per record and one per (record, ecosystem, package) with its ranges, looked up
  by (ecosystem, package name). A source's rows are replaced together, never edited.
- :class:`Vulnerability`: one row per identity (a CVE, or an advisory's own id), merged
  over every source's records, with KEV and EPSS beside it; rebuilt after a source
  changes.
- :class:`VulnKev`, :class:`VulnEpss`: the catalogue and the scores, by CVE.
- :class:`VulnSet`, :class:`VulnFinding`: the findings of one (package set, repository
  set, ecosystem), computed once and shared by every host with those inputs, like
  ``UpdateSet``; each distinct finding stored once; :class:`VulnHost` says which set
  each host has.
"""

from __future__ import annotations

from peewee import BlobField
from peewee import BooleanField
from peewee import CharField
from peewee import DoubleField
from peewee import ForeignKeyField
from peewee import IntegerField
from peewee import TextField

from patchwatch.store.models import BaseModel
from patchwatch.store.models import Host
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import RepositorySet


class VulnSource(BaseModel):
    """One feed as last read: validators, content digest, outcome, counts."""

    name = CharField(max_length=160, primary_key=True)
    location = TextField(default="")  # URL or local path last read
    etag = CharField(max_length=255, default="")
    last_modified = CharField(max_length=64, default="")
    content_digest = CharField(max_length=64, default="")  # sha256 of the last good content
    last_attempt_at = DoubleField(null=True)
    last_success_at = DoubleField(null=True)  # last read that ended well (changed or not)
    last_change_at = DoubleField(null=True)  # last time its stored data changed
    failures_total = IntegerField(default=0)
    consecutive_failures = IntegerField(default=0)
    last_error = TextField(default="")
    records = IntegerField(null=True)  # None: no good data yet
    skipped = IntegerField(null=True)
    changed_too_much = BooleanField(default=False)


class VulnRecord(BaseModel):
    """One record of a source's last good data (an advisory, a CVE entry)."""

    source = CharField(max_length=160, index=True)
    record_id = CharField(max_length=160)
    identities = TextField(default="")  # space-separated
    published = DoubleField(null=True)
    modified = DoubleField(null=True)
    cvss_version = CharField(max_length=8, default="")
    cvss_vector = CharField(max_length=512, default="")
    cvss_score = DoubleField(null=True)
    cvss_level = CharField(max_length=16, default="")
    rating_scheme = CharField(max_length=32, default="")
    rating_text = CharField(max_length=64, default="")
    rating_level = CharField(max_length=16, default="")
    summary = TextField(default="")
    urls = TextField(default="")  # newline-separated advisory links


class VulnAffected(BaseModel):
    """One ``affected`` entry: ecosystem, package name and its ranges (JSON)."""

    record = ForeignKeyField(VulnRecord, backref="affected", on_delete="CASCADE", index=True)
    ecosystem = CharField(max_length=160)
    package = CharField(max_length=255)
    ranges = TextField(default="[]")  # [[kind, [[event, version], ...]], ...]
    versions = TextField(default="[]")
    rating_level = CharField(max_length=16, default="")

    class Meta:
        indexes = ((("ecosystem", "package"), False),)


class Vulnerability(BaseModel):
    """One vulnerability, merged over every record naming it, with KEV and EPSS."""

    id = CharField(max_length=160, primary_key=True)
    severity = CharField(max_length=16, default="unknown")  # the level counts use
    cvss_score = DoubleField(null=True)
    cvss_vector = CharField(max_length=512, default="")
    rating = CharField(max_length=64, default="")  # "scheme: text" as published
    published = DoubleField(null=True)
    kev = BooleanField(default=False)
    kev_added = CharField(max_length=10, default="")
    kev_due = CharField(max_length=10, default="")
    kev_ransomware = BooleanField(null=True)
    epss = DoubleField(null=True)
    epss_percentile = DoubleField(null=True)
    summary = TextField(default="")
    records = TextField(default="")  # space-separated record ids
    urls = TextField(default="")


class VulnKev(BaseModel):
    """One entry of CISA's catalogue."""

    cve = CharField(max_length=32, primary_key=True)
    date_added = CharField(max_length=10)
    due_date = CharField(max_length=10, default="")
    ransomware = BooleanField(null=True)
    name = CharField(max_length=255, default="")


class VulnEpss(BaseModel):
    """One EPSS score (only CVEs some feed names are kept)."""

    cve = CharField(max_length=32, primary_key=True)
    score = DoubleField()
    percentile = DoubleField()


class VulnFinding(BaseModel):
    """One vulnerability on one installed package version, with its status and fix.

    Stored once however many sets have it (``key`` is the digest of every field):
    hosts share nearly all their packages, so a fleet's distinct findings are a small
    fraction of (set, finding) pairs, and a set keeps only their ids.
    """

    key = CharField(max_length=40, unique=True)
    vulnerability = CharField(max_length=160, index=True)
    status = CharField(max_length=16)  # fixable, fixed_upstream, no_fix
    package = CharField(max_length=255)
    installed = CharField(max_length=255)
    fixed_version = CharField(max_length=255, default="")
    candidate = CharField(max_length=255, default="")  # the update carrying the fix
    records = TextField(default="")


class VulnSet(BaseModel):
    """The findings of one (package set, repository set, ecosystem), shared by hosts.

    ``finding_ids``: the :class:`VulnFinding` ids, packed (``patchwatch.domain.packed_ids``).
    ``fixing``: the installed package ids (of the package set) with a fixable finding,
    packed: what the update computation reads (migration 20).
    ``summary``: what a scrape serves for its hosts (counts by severity and status, KEV
    fixable, oldest fixable critical/high, KEV vulnerabilities), as JSON, computed with
    the findings: a scrape then reads one row per set instead of every finding.
    """

    package_set = ForeignKeyField(PackageSet, on_delete="CASCADE", index=False)
    repository_set = ForeignKeyField(RepositorySet, null=True, on_delete="CASCADE", index=False)
    ecosystem = CharField(max_length=160)
    inputs_digest = CharField(max_length=64, default="")  # feeds and mirror data it read
    computed_at = DoubleField()
    finding_ids = BlobField(null=True)
    summary = TextField(default="{}")
    # installed package ids with a fixable finding, packed: their pending updates fix a
    # vulnerability, so the update computation counts them as security updates
    fixing = BlobField(null=True)
    # beside each of them, the earliest publication of what it fixes (float64, NaN:
    # none known or not wanted), the first-seen time its update may start at
    fixing_since = BlobField(null=True)

    class Meta:
        indexes = ((("package_set", "repository_set", "ecosystem"), True),)


class PackageSource(BaseModel):
    """The source package of a binary whose source has another name (``libc6`` of
    ``glibc``) or version (a binNMU), as the host's agent reports it or, for hosts that
    do not (Patchman clients), a mirror's apt index says (``Source:``): Debian's and
    Ubuntu's vulnerability records name source packages, hosts report binaries.
    ``version`` "": not known (a mirror's index names no version apart).
    """

    package = ForeignKeyField(Package, primary_key=True, on_delete="CASCADE")
    source = CharField(max_length=255)
    version = CharField(max_length=255, default="")  # migration 20


class VulnHost(BaseModel):
    """Which findings a host has: its set, or none when its OS maps to no ecosystem."""

    host = ForeignKeyField(Host, primary_key=True, on_delete="CASCADE")
    vuln_set = ForeignKeyField(VulnSet, null=True, on_delete="SET NULL", index=True)
    ecosystem = CharField(max_length=160, default="")  # "" : not matched
    computed_at = DoubleField()


VULN_MODELS: tuple[type[BaseModel], ...] = (
    VulnSource,
    VulnRecord,
    VulnAffected,
    Vulnerability,
    VulnKev,
    VulnEpss,
    VulnFinding,
    VulnSet,
    VulnHost,
    PackageSource,
)
