"""The store's tables.

What hosts share is stored once: a package is one row however many hosts have it, a
host's installed packages are a *package set* identified by the hash of its contents,
and its repositories a *repository set*. Updates are computed per (package set,
repository set, kernel) in :class:`UpdateSet` and copied per host only to keep each
pending update's first-seen time.

Times are Unix seconds (floats) in ``*_at`` columns: the exporter serves them as
``_timestamp_seconds`` without conversion and they compare the same on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from peewee import SQL
from peewee import BlobField
from peewee import BooleanField
from peewee import CharField
from peewee import CompositeKey
from peewee import DoubleField
from peewee import ForeignKeyField
from peewee import IntegerField
from peewee import Model
from peewee import TextField

from patchwatch.domain.limits import MAX_ADVISORY_ID
from patchwatch.domain.limits import MAX_ADVISORY_ISSUED
from patchwatch.domain.limits import MAX_ADVISORY_SEVERITY
from patchwatch.domain.limits import MAX_ADVISORY_TYPE
from patchwatch.domain.limits import MAX_ARCH
from patchwatch.domain.limits import MAX_EPOCH
from patchwatch.domain.limits import MAX_PACKAGE_NAME
from patchwatch.domain.limits import MAX_RELEASE
from patchwatch.domain.limits import MAX_VERSION
from patchwatch.domain.reboot import reboot_required
from patchwatch.store.db import database


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class SchemaVersion(BaseModel):
    """Applied schema migrations, one row per version (see ``patchwatch.store.migrations``)."""

    version = IntegerField(primary_key=True)
    description = TextField()
    applied_at = DoubleField()


class OSRelease(BaseModel):
    """A distribution release as hosts report it ("Debian 12", "Rocky Linux 9")."""

    name = CharField(max_length=255, unique=True)
    family = CharField(max_length=32)  # debian, redhat, suse, arch, alpine, unknown
    os_id = CharField(max_length=64, default="")
    version = CharField(max_length=64, default="")
    codename = CharField(max_length=64, default="")
    cpe = CharField(max_length=255, default="")
    # check that its hosts' reporting addresses resolve back to their names (rdns.py)
    reverse_dns_check = BooleanField(default=False)
    # the vulnerability ecosystems its hosts read, as an operator set them ("": from
    # os-release; "none": no feed; see patchwatch.domain.vulns.ecosystems.host_ecosystem)
    vuln_ecosystem = CharField(max_length=512, default="")  # migration 20


class Package(BaseModel):
    """One package build, shared by every host and mirror that has it."""

    kind = CharField(max_length=8)  # deb, rpm, arch, apk
    # as wide as patchwatch.domain.limits allows (migration 8 widened them on PostgreSQL)
    name = CharField(max_length=MAX_PACKAGE_NAME, index=True)
    epoch = CharField(max_length=MAX_EPOCH, default="")
    version = CharField(max_length=MAX_VERSION)
    release = CharField(max_length=MAX_RELEASE, default="")
    arch = CharField(max_length=MAX_ARCH)

    class Meta:
        indexes = ((("kind", "name", "epoch", "version", "release", "arch"), True),)

    @property
    def version_string(self) -> str:
        """The version as the package manager prints it ([epoch:]version[-release])."""
        out = f"{self.epoch}:{self.version}" if self.epoch not in ("", "0") else self.version
        return f"{out}-{self.release}" if self.release else out


class PackageSet(BaseModel):
    """A set of packages stored once: a host's installed packages, or a mirror's index.

    ``member_ids`` repeats the members' package ids, ascending, as 4-byte
    little-endian integers (``patchwatch.domain.packed_ids``; NULL where an id does not
    fit). Why a second copy: computing updates reads every host's set, and one value
    by primary key is a fraction of the cost of gathering 1,500 member rows
    (docs/performance.md). Both are written together and a set never changes
    after, so only a damaged or hand-edited store makes them differ, which ``dbcheck``
    looks for; ``package_set_member`` stays the copy that SQL reads (through the
    ``package_set_content`` view, below). Outside the migrations, only
    ``patchwatch.store.package_sets`` reads or writes either copy.

    ``base``: a set with a base is written as a difference from it (schema 7,
    ``patchwatch.domain.set_bases``): its member rows are the packages in exactly one of
    the two. A base is always a whole set. SQL reads a set's packages through the
    ``package_set_content`` view (:class:`PackageSetContent`), which resolves both
    kinds; ``member_ids`` is always the whole set.
    """

    # sha256 of the members' sorted key lines, not of their ids (patchwatch.domain.set_digest)
    digest = CharField(max_length=64, unique=True)
    size = IntegerField()
    created_at = DoubleField()
    member_ids = BlobField(null=True)
    base = ForeignKeyField("self", null=True, backref="differences", index=True)


class PackageListing(BaseModel):
    """A package list as a report sent it, by its listing digest, and the
    package set it made, by that set's digest (schema 23).

    Why: processing a report whose list is one it has seen (an unchanged re-report,
    a host that did not drift from its image) then skips parsing the list and naming
    its set (``patchwatch.pipeline.processing``). The set is named by its digest, not
    its id: the row stays true whatever happens to the set (a set deleted is then
    simply not found, and an id that SQLite gives again names nothing here).
    ``patchwatch.domain.set_digest.listing_digest`` says what the digest covers.
    Outside the migrations, only ``patchwatch.store.package_sets`` reads or writes it.
    """

    digest = CharField(max_length=64, unique=True)
    set_digest = CharField(max_length=64)
    created_at = DoubleField()


class PackageSetMember(BaseModel):
    """One package of a whole set, or of a difference: in exactly one of it and its base.

    The primary key (set, package) is the set's own index; the second index answers
    "which sets hold this package". On SQLite the table is clustered on its key
    (``WITHOUT ROWID``, migration 2): a set's members are one contiguous range. On
    PostgreSQL the foreign keys are dropped (migration 3: a trigger per row was half
    the cost of a new set); deleting a set or a package deletes its members
    explicitly (``patchwatch.inventory.dbcheck``), not through ``ON DELETE CASCADE``.
    """

    package_set = ForeignKeyField(PackageSet, backref="members", on_delete="CASCADE", index=False)
    package = ForeignKeyField(Package, backref="in_sets", on_delete="CASCADE", index=True)

    class Meta:
        primary_key = CompositeKey("package_set", "package")


class PackageSetContent(BaseModel):
    """The packages of every set, whole or written as a difference (a view, schema 7).

    Read-only; not in :data:`MODELS` (the migration creates it). Writers write
    :class:`PackageSetMember`.
    """

    package_set_id = IntegerField()
    package_id = IntegerField()

    class Meta:
        table_name = "package_set_content"
        primary_key = False


class Repository(BaseModel):
    """A source of packages, whatever mirror it is read from.

    ``key`` identifies it across hosts: for apt the normalised archive URL, suite,
    component and architecture; for rpm-md the repo id and architecture plus its URLs.
    """

    kind = CharField(max_length=8)  # deb, rpm, zypper, arch, apk
    key = CharField(max_length=1024, unique=True)
    name = CharField(max_length=512, default="")
    repo_id = CharField(max_length=512, default="")
    suite = CharField(max_length=255, default="")
    component = CharField(max_length=255, default="")
    arch = CharField(max_length=32, default="")
    security = BooleanField(default=False)  # learned from the metadata (Release Label...)
    security_override = BooleanField(null=True)  # operator's word; wins when set
    enabled = BooleanField(default=True)
    auth_required = BooleanField(default=False)  # server cannot read it (RHEL CDN, SUSE)
    created_at = DoubleField()

    @property
    def is_security(self) -> bool:
        """The effective security flag: the operator's word when given, else the
        metadata's. Everything that asks whether a repository is a security source
        (update computation, its inputs digest, listings, the CLI) asks here."""
        return bool(self.security if self.security_override is None else self.security_override)


class Mirror(BaseModel):
    """One URL serving a repository, with its refresh state and last good data.

    ``approved``: an operator said the server may read it (``patchwatch repos
    approve``). A mirror a host reported is read only when approved or when its URL
    matches ``mirror_url_patterns`` (``patchwatch.domain.mirror_policy``); the URL comes from
    whoever controls the host. Per mirror, not per repository: a host can report a
    new URL for a repository that is already approved.
    """

    repository = ForeignKeyField(Repository, backref="mirrors", on_delete="CASCADE")
    url = CharField(max_length=2048)
    kind = CharField(max_length=16, default="baseurl")  # baseurl, mirrorlist, metalink
    enabled = BooleanField(default=True)
    approved = BooleanField(default=False)
    last_attempt_at = DoubleField(null=True)
    last_success_at = DoubleField(null=True)
    last_change_at = DoubleField(null=True)
    failures_total = IntegerField(default=0)
    consecutive_failures = IntegerField(default=0)
    last_error = TextField(default="")
    metadata_checksum = CharField(max_length=160, default="")  # skip when unchanged
    etag = CharField(max_length=255, default="")
    last_modified = CharField(max_length=64, default="")
    package_set = ForeignKeyField(PackageSet, null=True, on_delete="SET NULL")
    package_count = IntegerField(default=0)
    # entries of the last good index left out for a field over its bound; None: not
    # known (never read since the bounds came, or an apt mirror's advisories)
    skipped_packages = IntegerField(null=True)
    skipped_advisories = IntegerField(null=True)

    class Meta:
        indexes = ((("repository", "url"), True),)


class RepositorySet(BaseModel):
    """The repositories one or more hosts use, with their priorities, stored once."""

    digest = CharField(max_length=64, unique=True)
    size = IntegerField()
    created_at = DoubleField()


class RepositorySetMember(BaseModel):
    repository_set = ForeignKeyField(RepositorySet, backref="members", on_delete="CASCADE")
    repository = ForeignKeyField(Repository, backref="in_sets", on_delete="CASCADE", index=True)
    priority = IntegerField(default=0)  # higher wins (rpm priorities are negated)
    enabled = BooleanField(default=True)
    # an apk tagged repository: the only names it offers (space-separated, those the
    # world file pins to its tag); NULL for every other repository: all it has
    pinned = TextField(null=True)

    class Meta:
        primary_key = CompositeKey("repository_set", "repository")


class OSReleaseRepository(BaseModel):
    """Repositories an OS release's hosts use when they are set to use their OS's."""

    os_release = ForeignKeyField(OSRelease, backref="repositories", on_delete="CASCADE")
    repository = ForeignKeyField(Repository, on_delete="CASCADE")

    class Meta:
        primary_key = CompositeKey("os_release", "repository")


class Host(BaseModel):
    """A reporting machine and its current state, as of its last processed report.

    Whether its pending updates are known: ``updates_complete`` says the last
    computation had data for every repository of the host the server can read
    (otherwise the counts would pass for "nothing pending" where nothing is known).
    Whether they are current: processing moves ``inputs_changed_at`` forward whenever
    a report changes what they are computed from, and the computation records the value
    it read in ``updates_inputs_at``; the two differ while a computation is due
    (``patchwatch.pipeline.followup`` runs it within seconds).
    """

    name = CharField(max_length=255, unique=True)  # lower-cased FQDN
    domain = CharField(max_length=255, default="")
    os_release = ForeignKeyField(OSRelease, null=True, on_delete="SET NULL", index=True)
    os_variant = CharField(max_length=255, default="")
    kernel = CharField(max_length=255, default="")
    arch = CharField(max_length=32, default="")
    tags = TextField(default="")  # space-separated, sorted
    reboot_reported = BooleanField(null=True)  # the host's own signal, never discarded
    reboot_kernel = BooleanField(null=True)  # newer kernel installed than running (None: unknown)
    package_set = ForeignKeyField(PackageSet, null=True, on_delete="SET NULL", index=True)
    repository_set = ForeignKeyField(RepositorySet, null=True, on_delete="SET NULL", index=True)
    use_os_repositories = BooleanField(default=False)
    check_updates = BooleanField(default=True)
    maintenance_until = DoubleField(null=True)
    agent = CharField(max_length=128, default="")
    protocol = CharField(max_length=32, default="")
    remote_addr = CharField(max_length=64, default="")
    created_at = DoubleField()
    last_report_at = DoubleField(null=True)
    last_processed_at = DoubleField(null=True)
    updates_computed_at = DoubleField(null=True)
    packages_without_repository = IntegerField(null=True)  # copied from the update set
    # packages on hold, from the last report: JSON [[name, arch], ...], "" for none
    # (``patchwatch.domain.updates.encode_holds``); their updates are marked held per host
    held = TextField(default="", constraints=[SQL("DEFAULT ''")])
    # when processing last changed what updates are computed from (package set,
    # repository set, kernel, OS release); always increases
    inputs_changed_at = DoubleField(null=True)
    updates_inputs_at = DoubleField(null=True)  # inputs_changed_at as the last computation read it
    updates_complete = BooleanField(default=False)  # computed with every readable repository's data
    # its pending updates counted (patchwatch.store.host_counts): written with them by the
    # update computation; NULL while its updates were never computed or are not checked
    security_updates = IntegerField(null=True)  # security, not held
    other_updates = IntegerField(null=True)  # neither security nor held
    held_updates = IntegerField(null=True)  # of held packages, security or not
    oldest_security_at = DoubleField(null=True)  # first seen, of the security ones counted

    @property
    def reboot_required(self) -> bool | None:
        """Whether the host needs a reboot (:mod:`patchwatch.domain.reboot`); None: unknown."""
        return reboot_required(self.reboot_reported, self.reboot_kernel)

    # reverse DNS check (patchwatch.store.rdns): None follows the OS group's setting
    reverse_dns_check = BooleanField(null=True)
    # the address last checked
    reverse_dns_address = CharField(max_length=64, default="", constraints=[SQL("DEFAULT ''")])
    reverse_dns_name = CharField(max_length=255, default="", constraints=[SQL("DEFAULT ''")])
    # "": never checked
    reverse_dns_status = CharField(max_length=16, default="", constraints=[SQL("DEFAULT ''")])
    reverse_dns_checked_at = DoubleField(null=True)


class Token(BaseModel):
    """An API credential. Only a hash of the secret is stored.

    A token reads ``pw_<prefix>_<secret>``: the prefix finds the row, the secret is
    compared by hash in constant time. ``host_name`` binds a host token (or an
    enrollment token after it enrolled a host) to one host.
    """

    prefix = CharField(max_length=32, unique=True)
    secret_hash = CharField(max_length=128)
    kind = CharField(max_length=16)  # host, enroll, admin, viewer
    host_name = CharField(max_length=255, null=True, index=True)
    comment = CharField(max_length=255, default="")
    created_at = DoubleField()
    last_used_at = DoubleField(null=True)
    expires_at = DoubleField(null=True)
    revoked_at = DoubleField(null=True)


class HostCredential(BaseModel):
    """The one token allowed to write a host's reports.

    Set when an admin creates a host token, or by the report that enrolls a new host
    (with an enrollment token), which gets the host its own token. Any other token
    writing that host is refused; revoking the token keeps the binding (only
    ``patchwatch token release`` removes it). Hosts enrolled before schema 8 may be
    bound to the enrollment token itself until their agent asks for its own.
    ``enroll_key_hash``: SHA-256 of the key the enrolling agent sent, so that it can
    ask again if the answer was lost ("" when none was sent).
    """

    host_name = CharField(max_length=255, unique=True)
    token = ForeignKeyField(Token, backref="hosts", on_delete="CASCADE")
    bound_at = DoubleField()
    enroll_key_hash = CharField(max_length=64, default="")


class Report(BaseModel):
    """A report as decoded from the request, stored (compressed) before it is acknowledged."""

    host_name = CharField(max_length=255, index=True)
    protocol = CharField(max_length=32)  # patchwatch/1, patchman/1, patchman/2
    token = ForeignKeyField(Token, null=True, on_delete="SET NULL")
    received_at = DoubleField(index=True)
    remote_addr = CharField(max_length=64, default="")
    user_agent = CharField(max_length=255, default="")
    body = BlobField()  # the decoded document re-serialised as compact JSON, zlib-compressed
    size = IntegerField()  # size of that JSON in bytes, before compression
    state = CharField(max_length=16, default="pending", index=True)
    processed_at = DoubleField(null=True)
    error = TextField(default="")
    attempts = IntegerField(default=0)
    # digest of the report's package set, from the receiver's own parse ("" if not
    # known): processing skips the package list when a set with this digest exists
    packages_digest = CharField(max_length=64, default="")


class ReportedUpdate(BaseModel):
    """An update the host's own package manager reported (for repos we cannot read)."""

    host = ForeignKeyField(Host, backref="reported_updates", on_delete="CASCADE")
    name = CharField(max_length=255)
    version = CharField(max_length=255)
    arch = CharField(max_length=32)
    security = BooleanField()
    repository = CharField(max_length=512, default="")


class Module(BaseModel):
    """An rpm module stream enabled on a host."""

    host = ForeignKeyField(Host, backref="modules", on_delete="CASCADE")
    name = CharField(max_length=255)
    stream = CharField(max_length=255)
    version = CharField(max_length=64, default="")
    context = CharField(max_length=64, default="")
    arch = CharField(max_length=32, default="")


class Advisory(BaseModel):
    """An errata entry read from a repository (updateinfo, zypper patches)."""

    advisory_id = CharField(max_length=MAX_ADVISORY_ID)
    repository = ForeignKeyField(Repository, backref="advisories", on_delete="CASCADE")
    type = CharField(max_length=MAX_ADVISORY_TYPE)
    severity = CharField(max_length=MAX_ADVISORY_SEVERITY, default="")
    title = TextField(default="")
    issued = CharField(max_length=MAX_ADVISORY_ISSUED, default="")
    cves = TextField(default="")  # space-separated

    class Meta:
        indexes = ((("repository", "advisory_id"), True),)


class AdvisoryPackage(BaseModel):
    advisory = ForeignKeyField(Advisory, backref="packages", on_delete="CASCADE")
    package = ForeignKeyField(Package, on_delete="CASCADE", index=True)

    class Meta:
        primary_key = CompositeKey("advisory", "package")


class UpdateSet(BaseModel):
    """Updates for one (package set, repository set, kernel), shared by its hosts."""

    package_set = ForeignKeyField(PackageSet, on_delete="CASCADE")
    repository_set = ForeignKeyField(RepositorySet, null=True, on_delete="CASCADE")
    kernel = CharField(max_length=255, default="")
    computed_at = DoubleField()
    inputs_digest = CharField(max_length=64, default="")  # mirror data it was computed from
    packages_without_repository = IntegerField(null=True)  # None: no repository data at all

    class Meta:
        indexes = ((("package_set", "repository_set", "kernel"), True),)


class UpdateSetItem(BaseModel):
    """One pending update of an update set.

    Indexed by update set only; on SQLite the keys to packages and repositories are
    dropped with their indexes (migration 5), on PostgreSQL every key (migration 3).
    """

    update_set = ForeignKeyField(UpdateSet, backref="items", on_delete="CASCADE")
    installed = ForeignKeyField(Package, on_delete="CASCADE", index=False)
    available = ForeignKeyField(Package, on_delete="CASCADE", index=False)
    security = BooleanField()
    repository = ForeignKeyField(Repository, null=True, on_delete="SET NULL", index=False)


class HostUpdate(BaseModel):
    """A pending update of one host, kept to remember when it was first seen.

    No foreign keys on PostgreSQL (migration 3), like ``UpdateSetItem``: deleting a
    host deletes its pending updates explicitly (``patchwatch.inventory.hosts``). Indexed by
    host only; on SQLite the keys to packages and repositories went with their
    indexes (migration 5).
    """

    host = ForeignKeyField(Host, backref="updates", on_delete="CASCADE", index=False)
    installed = ForeignKeyField(Package, on_delete="CASCADE", index=False)
    available = ForeignKeyField(Package, on_delete="CASCADE", index=False)
    security = BooleanField()
    repository = ForeignKeyField(Repository, null=True, on_delete="SET NULL", index=False)
    first_seen_at = DoubleField()
    # the host holds the package: counted apart. A default in the schema too: rows are
    # also copied in SQL from update set items, which have no such column
    held = BooleanField(default=False, constraints=[SQL("DEFAULT false")])

    class Meta:
        indexes = (
            (("host", "installed"), True),
            # covers the scrape's per-host counts: read in host order, table untouched
            (("host", "security", "held", "first_seen_at"), False),
        )


class JobRun(BaseModel):
    """One run of a scheduled or manual job, with its outcome."""

    job = CharField(max_length=64, index=True)
    started_at = DoubleField(index=True)
    finished_at = DoubleField(null=True)
    duration_seconds = DoubleField(null=True)
    outcome = CharField(max_length=16, default="running")  # running, success, failure
    detail = TextField(default="")


class SchedulerLock(BaseModel):
    """A lease so that only one scheduler works at a time; others wait for it."""

    name = CharField(max_length=64, primary_key=True)
    holder = CharField(max_length=255)
    acquired_at = DoubleField()
    expires_at = DoubleField()


class HealthProbe(BaseModel):
    """A row each writer rewrites to prove the store takes writes (``patchwatch.store.health``)."""

    name = CharField(max_length=64, primary_key=True)
    checked_at = DoubleField()


class ServerSecret(BaseModel):
    """A secret the server makes once and every process reads (the console's session key).

    Stored rather than configured so that several receiver workers, on one machine or
    many, sign and check the same cookies without an operator setting anything.
    """

    name = CharField(max_length=64, primary_key=True)
    value = CharField(max_length=128)
    created_at = DoubleField()


class AuditEntry(BaseModel):
    """One operator action taken in the web console: who, when, what, on what."""

    at = DoubleField(index=True)
    actor = CharField(max_length=255)  # "admin token 3f2a9c1b0d4e (laptop)"
    action = CharField(max_length=64)
    subject = CharField(max_length=1024)
    detail = TextField(default="")


MODELS: tuple[type[BaseModel], ...] = (
    SchemaVersion,
    OSRelease,
    Package,
    PackageSet,
    PackageSetMember,
    PackageListing,
    Repository,
    Mirror,
    RepositorySet,
    RepositorySetMember,
    OSReleaseRepository,
    Host,
    Token,
    HostCredential,
    Report,
    ReportedUpdate,
    Module,
    Advisory,
    AdvisoryPackage,
    UpdateSet,
    UpdateSetItem,
    HostUpdate,
    JobRun,
    SchedulerLock,
    HealthProbe,
    ServerSecret,
    AuditEntry,
)
