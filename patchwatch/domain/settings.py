"""Every setting in one table, read from a TOML file and from ``PATCHWATCH_*`` variables.

The table (the fields of :class:`Settings`, each with a default and a help text) is the
single source: ``patchwatch config`` prints it, the README documents it, and a test checks
the two agree. Precedence, lowest first: defaults, the config file, the environment,
command-line overrides. Parsing is pure: callers pass the environment in.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from patchwatch.domain.errors import ConfigError
from patchwatch.domain.mirror_policy import DEFAULT_MIRROR_URL_PATTERNS
from patchwatch.domain.mirror_policy import MirrorPolicy
from patchwatch.domain.mirror_policy import parse_pattern
from patchwatch.domain.repodata.model import DEFAULT_PACKAGES_ORDER
from patchwatch.domain.repodata.model import PACKAGES_FORMATS

ENV_PREFIX = "PATCHWATCH_"
CONFIG_ENV = "PATCHWATCH_CONFIG"
DEFAULT_CONFIG_PATHS = ("/etc/patchwatch/patchwatch.toml",)
MASK = "********"

log = logging.getLogger(__name__)

# Settings a release removed, with why: a file or environment that still sets one is
# read with a warning rather than refused, so that an upgrade does not stop a server
# over a value that no longer means anything.
REMOVED_SETTINGS = {
    "report_claim_timeout_seconds": "reports are claimed and applied in one transaction, "
    "so none is left taken by a process that died",
}


def _setting(default: Any, help: str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Effective configuration of one patchwatch process."""

    data_dir: str = _setting(
        "data",
        "Folder for the SQLite database and runtime files; relative paths are resolved "
        "from the working directory.",
    )
    database_url: str = _setting(
        "",
        "Database URL. Empty means sqlite:///<data_dir>/patchwatch.db. Use "
        "postgresql://user:password@host:5432/name when one machine is not enough.",
        secret=True,
    )
    bind: str = _setting(
        "127.0.0.1:8740",
        "Address the HTTP server (receiver, /metrics, /healthz) listens on, host:port.",
    )
    workers: int = _setting(2, "Number of gunicorn worker processes for the receiver.")
    threads: int = _setting(
        8,
        "Threads per worker: a slow client then holds one thread, not a whole worker.",
    )
    worker_max_memory_bytes: int = _setting(
        512 * 1024 * 1024,
        "A receiver worker whose memory (resident) is still above this after a request, "
        "once freed memory is handed back, is replaced by a fresh one when its requests "
        "are done; 0 never. Workers hold about 50 MiB, plus up to 64 MiB of parsed "
        "packages and one large report at a time.",
    )
    client_read_timeout_seconds: float = _setting(
        15.0,
        "A client that sends nothing for this long while its request is being read is "
        "disconnected (slow-loris protection; put a proxy in front on hostile networks).",
    )
    log_level: str = _setting("INFO", "Log level: DEBUG, INFO, WARNING or ERROR.")
    max_report_bytes: int = _setting(
        16 * 1024 * 1024, "Largest accepted report body in bytes, as sent (413 above)."
    )
    max_report_decompressed_bytes: int = _setting(
        64 * 1024 * 1024,
        "Largest accepted report after gzip decompression, in bytes (413 above).",
    )
    max_report_values: int = _setting(
        2_000_000,
        "Largest number of JSON values (objects, arrays, strings, numbers) in a report, "
        "counted before it is parsed (413 above): parsing costs about 72 bytes per value "
        "however short, and a 1,500-package report holds about 11,000.",
    )
    reports_keep: int = _setting(10, "Raw reports kept per host; older ones are pruned.")
    process_inline: bool = _setting(
        True,
        "Process reports right after storing them, in batches, as they arrive: under "
        "serve in processing processes of their own (process_workers), which the "
        "receiver wakes; a receiver run alone processes on a thread of each worker. "
        "When false, the scheduler picks queued reports up (useful with many receivers).",
    )
    process_workers: int = _setting(
        2,
        "Processing processes serve starts when process_inline is on; each takes its "
        "share of the queue (parsing is CPU work: one per core).",
    )
    report_burst_per_host: int = _setting(
        20,
        "Reports one host may send at once (an agent's spool after an outage) before "
        "report_rate_per_host applies; more get 429 with Retry-After. 0 turns the "
        "limit off. Counted per receiver worker process.",
    )
    report_rate_per_host: float = _setting(
        6.0,
        "Reports a minute one host may send on average once its burst is spent.",
    )
    protocol1_networks: tuple[str, ...] = _setting(
        (),
        "Networks (CIDR, comma-separated) allowed to use Patchman protocol 1, which "
        "carries no credentials. Empty disables protocol 1.",
    )
    trusted_proxies: tuple[str, ...] = _setting(
        (),
        "Proxy addresses (CIDR, comma-separated) whose X-Forwarded-For header is "
        "believed for the client address.",
    )
    refresh_interval_minutes: int = _setting(
        60, "How often the scheduler refreshes repository mirrors, in minutes."
    )
    process_interval_seconds: int = _setting(
        15, "How often the scheduler looks for queued reports, in seconds."
    )
    updates_interval_minutes: int = _setting(
        10, "How often the scheduler recomputes updates whose inputs changed, in minutes."
    )
    follow_reports: bool = _setting(
        True,
        "Within seconds of a report, the scheduler reads the repositories it brings for "
        "the first time and computes its host's updates (job follow_up, every second). "
        "When false, both wait for the periodic refresh and update jobs.",
    )
    scheduler_lease_seconds: float = _setting(
        60.0,
        "How long the active scheduler's database lease lasts without renewal; a waiting "
        "scheduler takes over this long after the active one dies.",
    )
    prune_interval_minutes: int = _setting(
        60, "How often old reports and job runs are pruned, in minutes."
    )
    http_timeout_seconds: float = _setting(
        30.0, "Timeout for one HTTP request to a mirror, in seconds."
    )
    http_retries: int = _setting(3, "Retries (with backoff) for a failed mirror request.")
    http_request_max_seconds: float = _setting(
        300.0,
        "Hard deadline for one mirror request, in seconds: connecting, the headers and "
        "the body together (a mirror that drips bytes is cut off at it).",
    )
    mirror_refresh_max_seconds: float = _setting(
        900.0,
        "Time box for refreshing one mirror, in seconds: all its requests and retries "
        "end by then, and the mirror's refresh fails.",
    )
    refresh_max_seconds: float = _setting(
        3600.0,
        "Time box for one refresh run (the scheduler's or 'patchwatch refresh'), in "
        "seconds: mirrors not started by then wait for the next run.",
    )
    refresh_concurrency: int = _setting(
        4,
        "Mirrors refreshed at the same time, so that one slow mirror does not hold up "
        "the others (each holds its parsed index in memory until it is stored).",
    )
    mirror_url_patterns: tuple[str, ...] = _setting(
        DEFAULT_MIRROR_URL_PATTERNS,
        "Mirror URLs read without an operator's approval, and where redirects, "
        "mirrorlists and xml:base may lead ([scheme://]host[:port][/path], *.domain "
        "for a domain and its subdomains; comma-separated). Other repositories wait "
        "for 'patchwatch repos approve'.",
    )
    mirror_allowed_networks: tuple[str, ...] = _setting(
        (),
        "Networks (CIDR, comma-separated) the server may fetch mirror metadata from "
        "although they are not public: loopback, private, link-local. Empty: public "
        "addresses only. List an internal mirror's network here.",
    )
    max_index_bytes: int = _setting(
        1024 * 1024 * 1024,
        "Largest repository index accepted after decompression, in bytes.",
    )
    max_index_packages: int = _setting(
        250_000,
        "Most packages one mirror's index may list (all its apt Packages files together, "
        "or its primary.xml; likewise its advisories, and the packages they name); a "
        "larger one fails the refresh and the last good data is kept. Debian's main "
        "amd64 lists 64,000. Entries with a field over its bound are skipped and counted.",
    )
    apt_verify_signatures: bool = _setting(
        True,
        "Verify apt Release signatures with gpgv against the trusted keyrings; turn off "
        "only for a trusted internal mirror that is not signed.",
    )
    apt_keyrings: tuple[str, ...] = _setting(
        (),
        "Extra OpenPGP keyrings (comma-separated paths) trusted for apt Release "
        "signatures, besides the Debian and Ubuntu archive keyrings.",
    )
    apt_index_formats: tuple[str, ...] = _setting(
        DEFAULT_PACKAGES_ORDER,
        "Which Packages file to download when a Release lists several (comma-separated, "
        "preferred first; gz, xz, bz2, lzma, plain). gz is about a third more bytes than "
        "xz and decompresses three times faster; put xz first on a slow link.",
    )
    alpm_database_signatures: str = _setting(
        "optional",
        "pacman database signatures (REPO.db.sig), as pacman's SigLevel for databases: "
        "optional (pacman's default: verified with gpgv when the mirror has one, which "
        "Arch's own mirrors do not), required, or never.",
    )
    alpm_keyrings: tuple[str, ...] = _setting(
        (),
        "Extra OpenPGP keyrings (comma-separated paths) trusted for pacman database "
        "signatures, besides Arch's (/usr/share/keyrings/archlinux.gpg, from the "
        "archlinux-keyring package).",
    )
    apk_keys: tuple[str, ...] = _setting(
        (),
        "Alpine's RSA public keys for APKINDEX signatures: comma-separated paths of key "
        "files (alpine-devel@lists.alpinelinux.org-*.rsa.pub, as in /etc/apk/keys) or of "
        "folders of them. Debian ships none; without them an Alpine mirror fails unless "
        "apk_verify_signatures is off.",
    )
    arch_security_tracker: str = _setting(
        "",
        "Arch's security tracker JSON: its URL (https://security.archlinux.org/"
        "issues/all.json, fetched by the refresh_security_feeds job, the last good copy "
        "kept) or a local path. An update that reaches a version it lists as fixed is a "
        "security update. Empty: Arch updates are never security.",
    )
    apk_secdb: tuple[str, ...] = _setting(
        (),
        "Alpine secdb documents, comma-separated URLs or paths "
        "(https://secdb.alpinelinux.org/v3.20/main.json, .../v3.20/community.json, ...; "
        "URLs fetched by the refresh_security_feeds job, the last good copy kept): an "
        "update of a package of the apk repository of that branch and name (URL ending "
        "in /v3.20/main) that reaches a version its secfixes list is a security update.",
    )
    security_feeds_refresh_interval_minutes: int = _setting(
        60,
        "How often the scheduler fetches arch_security_tracker and apk_secdb URLs "
        "(conditional requests: an unchanged feed costs one 304), in minutes.",
    )
    security_feed_max_bytes: int = _setting(
        64 * 1024 * 1024,
        "Largest Arch tracker or secdb document accepted, as sent and as decompressed "
        "(64 MiB at most); a larger one fails the feed's read and its last good copy "
        "is kept.",
    )
    apk_verify_signatures: bool = _setting(
        True,
        "Verify APKINDEX.tar.gz signatures against apk_keys, as apk does; turn off only "
        "for a trusted local repository that is not signed.",
    )
    reverse_dns_timeout_seconds: float = _setting(
        2.0,
        "Longest wait for one reverse DNS lookup of a host's reporting address (hosts "
        "with the reverse DNS check on); a lookup that takes longer leaves the result "
        "unknown until the next try.",
    )
    vulns_enabled: bool = _setting(
        False,
        "Read vulnerability feeds (OSV, Debian's security tracker, CISA KEV, EPSS) and "
        "compute each host's vulnerabilities (jobs refresh_vulns and compute_vulns). Off "
        "by default: the feeds are fetched from the internet unless the vulns_*_source "
        "settings name local files.",
    )
    vulns_osv_sources: tuple[str, ...] = _setting(
        ("https://osv-vulnerabilities.storage.googleapis.com/{ecosystem}/all.zip",),
        "Where OSV records are read (comma-separated): URLs, in which {ecosystem} is "
        "replaced by each ecosystem the fleet's hosts read (osv.dev's per-ecosystem "
        "zips), or local paths of a zip, a tarball or a folder of OSV JSON records "
        "(read whole, for air-gapped sites). Empty: no OSV.",
    )
    vulns_osv_ecosystems: tuple[str, ...] = _setting(
        (),
        "OSV ecosystems to load besides those that follow from the fleet's operating "
        "systems (Debian:12, AlmaLinux:9, ...); an entry starting with '-' removes one.",
    )
    vulns_debian_tracker_source: str = _setting(
        "https://security-tracker.debian.org/tracker/data/json",
        "URL or local path of Debian's security tracker JSON (read only when Debian hosts "
        "report); empty: not read.",
    )
    vulns_kev_source: str = _setting(
        "https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities.json",
        "URL or local path of CISA's Known Exploited Vulnerabilities catalogue (JSON); "
        "empty: not read.",
    )
    vulns_epss_source: str = _setting(
        "",
        "URL or local path of FIRST's EPSS daily scores (CSV, gzip-compressed or not); "
        "empty (the default): not read.",
    )
    vulns_refresh_interval_minutes: int = _setting(
        360, "How often the scheduler reads the vulnerability feeds, in minutes."
    )
    vulns_max_feed_bytes: int = _setting(
        512 * 1024 * 1024,
        "Largest vulnerability feed file accepted as downloaded or read, in bytes; a "
        "larger one fails the source's refresh and its last good data is kept.",
    )
    vulns_change_share: float = _setting(
        0.5,
        "A feed whose record count changes by more than this share between two reads "
        "is kept but flagged (patchwatch_vuln_feed_changed_too_much): a truncated feed "
        "is noticed rather than silently clearing the fleet's exposure.",
    )
    vulns_first_seen_at_publication: bool = _setting(
        True,
        "A pending update that fixes a vulnerability counts as first seen when the "
        "earliest vulnerability it fixes was published, when that is earlier than "
        "patchwatch first saw it: patch-age alerts (PatchwatchSecurityUpdatesPending) "
        "then work on the day patchwatch is installed. Off: when patchwatch first saw it.",
    )
    metrics_token: str = _setting(
        "",
        "When set, /metrics needs it: 'Authorization: Bearer <token>' or basic auth with it "
        "as the password (Prometheus's authorization or basic_auth scrape settings).",
        secret=True,
    )
    admin_token: str = _setting(
        "",
        "Optional static admin token (for provisioning, e.g. in docker compose); tokens "
        "made with 'patchwatch token create --admin' are preferred.",
        secret=True,
    )
    console_url: str = _setting(
        "",
        "Base URL of the web console as people reach it (e.g. https://patchwatch.example.org "
        "behind a proxy): console forms posted from its origin are accepted, and it is the "
        "base to give the dashboards' Console URL variable and the alerts' console_url. "
        "Empty: only the origin the server is asked under.",
    )
    console_session_minutes: float = _setting(
        480.0,
        "How long a web console sign-in lasts, in minutes; then the token is asked for "
        "again. A revoked token ends its sessions at their next request.",
    )
    console_secret: str = _setting(
        "",
        "Key that signs the web console's session cookies. Empty: one is generated once "
        "and kept in the database, so that every worker and receiver agrees.",
        secret=True,
    )
    console_cookie_secure: bool = _setting(
        True,
        "Mark the console's session cookie Secure, so browsers send it over HTTPS only "
        "(and to localhost). Turn off only to use the console over plain HTTP from another "
        "machine, where the token then crosses the network in the clear.",
    )

    @property
    def resolved_database_url(self) -> str:
        """Return the database URL, defaulting to SQLite inside the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'patchwatch.db'}"

    @property
    def mirror_policy(self) -> MirrorPolicy:
        """The fetch policy these settings describe (``patchwatch.domain.mirror_policy``)."""
        return MirrorPolicy.build(self.mirror_url_patterns, self.mirror_allowed_networks)


SETTINGS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(Settings)


def env_name(name: str) -> str:
    """Return the environment variable that sets ``name``."""
    return ENV_PREFIX + name.upper()


def _parse_value(f: dataclasses.Field[Any], raw: object, source: str) -> Any:
    kind = f.type
    where = f"{f.name} (from {source})"
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(where, f"expected true or false, got {raw!r}")
    if kind in ("int", "float"):
        if isinstance(raw, bool):
            raise ConfigError(where, f"expected a number, got {raw!r}")
        try:
            value = int(str(raw).strip()) if kind == "int" else float(str(raw).strip())
        except ValueError:
            raise ConfigError(where, f"expected a number, got {raw!r}") from None
        if value < 0:
            raise ConfigError(where, f"must not be negative, got {raw!r}")
        return value
    if kind == "tuple[str, ...]":
        if isinstance(raw, list | tuple):
            items = [str(x).strip() for x in raw]
        else:
            items = [x.strip() for x in str(raw).split(",")]
        return tuple(x for x in items if x)
    if not isinstance(raw, str):
        raise ConfigError(where, f"expected a string, got {raw!r}")
    return raw


def _validate(s: Settings) -> None:
    host, sep, port = s.bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("bind", f"expected host:port, got {s.bind!r}")
    if s.workers < 1:
        raise ConfigError("workers", "must be at least 1")
    if s.threads < 1:
        raise ConfigError("threads", "must be at least 1")
    if s.process_workers < 1:
        raise ConfigError("process_workers", "must be at least 1")
    if s.client_read_timeout_seconds <= 0:
        raise ConfigError("client_read_timeout_seconds", "must be positive")
    if s.console_session_minutes <= 0:
        raise ConfigError("console_session_minutes", "must be positive")
    if s.console_url and not re.match(r"^https?://[^/\s]+(/\S*)?$", s.console_url):
        raise ConfigError("console_url", f"expected an http(s):// URL, got {s.console_url!r}")
    if not 0 < s.reverse_dns_timeout_seconds <= 60:
        raise ConfigError("reverse_dns_timeout_seconds", "must be more than 0 and at most 60")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError("log_level", f"unknown level {s.log_level!r}")
    url = s.database_url
    if url and not re.match(r"^(sqlite|postgres|postgresql|postgresext|psycopg3)(\+pool)?://", url):
        raise ConfigError("database_url", "expected a sqlite:// or postgresql:// URL")
    for name in ("protocol1_networks", "trusted_proxies", "mirror_allowed_networks"):
        for net in getattr(s, name):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(name, f"not a network: {net!r}") from None
    for pattern in s.mirror_url_patterns:
        try:
            parse_pattern(pattern)
        except ValueError as exc:
            raise ConfigError("mirror_url_patterns", str(exc)) from None
    for name in ("http_request_max_seconds", "mirror_refresh_max_seconds", "refresh_max_seconds"):
        if getattr(s, name) <= 0:
            raise ConfigError(name, "must be positive")
    if not 0 < s.vulns_change_share <= 1:
        raise ConfigError("vulns_change_share", "must be more than 0 and at most 1")
    for fmt in s.apt_index_formats:
        if fmt not in PACKAGES_FORMATS:
            known = ", ".join(PACKAGES_FORMATS)
            raise ConfigError("apt_index_formats", f"unknown format {fmt!r} (known: {known})")
    if s.alpm_database_signatures not in ("optional", "required", "never"):
        raise ConfigError(
            "alpm_database_signatures",
            f"expected optional, required or never, got {s.alpm_database_signatures!r}",
        )
    for name in (
        "refresh_interval_minutes",
        "process_interval_seconds",
        "updates_interval_minutes",
        "prune_interval_minutes",
        "max_report_bytes",
        "max_report_decompressed_bytes",
        "max_report_values",
        "reports_keep",
        "max_index_packages",
        "refresh_concurrency",
        "vulns_refresh_interval_minutes",
        "vulns_max_feed_bytes",
        "security_feeds_refresh_interval_minutes",
        "security_feed_max_bytes",
    ):
        if getattr(s, name) < 1:
            raise ConfigError(name, "must be at least 1")


def parse_settings(
    file_values: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    file_label: str = "config file",
) -> Settings:
    """Build settings from file values, the environment and overrides (pure).

    :raises ConfigError: naming the setting, for an unknown key or a bad value.
    """
    by_name = {f.name: f for f in SETTINGS}
    values: dict[str, Any] = {}
    for key, raw in (file_values or {}).items():
        if key in REMOVED_SETTINGS:
            _warn_removed(key, file_label)
            continue
        if key not in by_name:
            raise ConfigError(f"{key} (from {file_label})", "unknown setting")
        values[key] = _parse_value(by_name[key], raw, file_label)
    for key, raw in (environ or {}).items():
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV:
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in REMOVED_SETTINGS:
            _warn_removed(name, key)
        if name in by_name:
            values[name] = _parse_value(by_name[name], raw, key)
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        if key not in by_name:
            raise ConfigError(key, "unknown setting")
        values[key] = _parse_value(by_name[key], raw, "command line")
    settings = Settings(**values)
    _validate(settings)
    return settings


def _warn_removed(name: str, source: str) -> None:
    log.warning("setting %s (from %s) was removed and is ignored: %s; delete it",
                name, source, REMOVED_SETTINGS[name])  # fmt: skip


def read_config_file(path: str | os.PathLike[str]) -> dict[str, object]:
    """Read a TOML config file: top-level keys, or a ``[patchwatch]`` table.

    :raises ConfigError: when the file cannot be read or is not valid TOML.
    """
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    table = data.get("patchwatch", data)
    if not isinstance(table, dict):
        raise ConfigError("config", f"{path}: [patchwatch] must be a table")
    return table


def load_settings(
    environ: Mapping[str, str],
    config_path: str | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Load settings the way every patchwatch command does.

    The file is ``config_path``, else ``$PATCHWATCH_CONFIG``, else the first existing
    default path; a file that was asked for explicitly must exist.
    """
    path = config_path or environ.get(CONFIG_ENV)
    if not path:
        path = next((p for p in DEFAULT_CONFIG_PATHS if os.path.exists(p)), None)
    file_values = read_config_file(path) if path else {}
    return parse_settings(file_values, environ, overrides, file_label=str(path))


def mask_url(url: str) -> str:
    """Hide the password in a URL, keeping the rest readable."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1" + MASK + "@", url)


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """Return (name, effective value, environment variable) with secrets masked."""
    rows = []
    for f in SETTINGS:
        value = getattr(settings, f.name)
        if isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        if f.metadata["secret"] and text:
            text = mask_url(text) if "://" in text else MASK
        rows.append((f.name, text, env_name(f.name)))
    return rows
