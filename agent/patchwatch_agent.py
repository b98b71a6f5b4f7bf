#!/usr/bin/env python3
"""patchwatch-agent: report a host's packages, repositories and reboot state to patchwatch.

One file, Python 3.6 or newer, standard library only, so that it can be copied to any
host. It collects what the host's own package tools say (dpkg, rpm, apt, dnf/yum,
zypper, pacman, apk), builds the native report
(``patchwatch/domain/schemas/report-v1.json``) and sends it with ``POST
{server}/api/v1/reports``. When the server cannot be reached the gzipped report is
kept in a bounded spool directory and sent first on the next run.

What it deliberately does not do: it never refreshes package metadata except through
``--updates`` (which asks dnf/zypper/apt what they see), it never decides which updates
apply (the server does), it never follows HTTP redirects (the token must not travel to
another URL), and it never prints the token. See docs/agent.md.
"""

import argparse
import configparser
import fcntl
import fnmatch
import glob
import gzip
import json
import os
import random
import re
import secrets
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree

AGENT_NAME = "patchwatch-agent"
__version__ = "0.1.0"

EXIT_OK = 0  # the report (and any spooled ones) was accepted
EXIT_USAGE = 1  # bad command line or configuration; nothing was sent
EXIT_SPOOLED = 2  # the server could not be reached; the report waits in the spool
EXIT_REJECTED = 3  # the server refused a report (4xx other than 408/429); not spooled

DEFAULT_CONFIG = "/etc/patchwatch/agent.conf"
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_.:/-]+$")
MAX_WARNINGS = 100

# key: (default, parser name); every key the config file accepts
SETTINGS = {
    "server": ("", "str"),
    "token": ("", "str"),
    "token_file": ("", "str"),
    "tags": ("", "str"),
    "hostname": ("", "str"),
    "spool_dir": ("/var/spool/patchwatch", "str"),
    "spool_max": (20, "int"),
    "timeout": (30.0, "float"),
    "retries": (3, "int"),
    "backoff": (2.0, "float"),
    "ca_file": ("", "str"),
    "hook_delay": (15.0, "float"),
    "updates": (False, "bool"),
    "state_dir": ("", "str"),
}
ENROLLMENT_KEY_HEADER = "X-Patchwatch-Enrollment-Key"

# rpm's base architecture for dnf's $basearch, keyed by `uname -m`
BASEARCH = {
    "i386": "i386",
    "i486": "i386",
    "i586": "i386",
    "i686": "i386",
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv7l": "armhfp",
    "armv7hl": "armhfp",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "loongarch64": "loongarch64",
}

RPM_DB_DIRS = ("/var/lib/rpm", "/usr/lib/sysimage/rpm")
RPM_DB_FILES = ("rpmdb.sqlite", "Packages", "Packages.db")
# installonly kernel packages whose release appears in `uname -r`
RPM_KERNELS = frozenset(
    (
        "kernel",
        "kernel-core",
        "kernel-default",
        "kernel-preempt",
        "kernel-rt",
        "kernel-rt-core",
        "kernel-64k",
        "kernel-64k-core",
        "kernel-uek",
        "kernel-uek-core",
        "kernel-lt",
        "kernel-ml",
        "kernel-azure",
        "kernel-kvmsmall",
        "kernel-longterm",
    )
)
DEB_KERNEL = re.compile(r"^linux-image-(?:unsigned-)?(\d\S*?)(?:-unsigned)?$")
DNF_REPO_DIRS = ("/etc/yum.repos.d", "/etc/yum/repos.d", "/etc/distro.repos.d")
DNF_VAR_DIRS = ("/etc/yum/vars", "/etc/dnf/vars")


class UsageError(Exception):
    """The command line or the configuration cannot be used (exit code 1)."""


# ----------------------------------------------------------------------------- text


def to_text(data):
    """Return ``data`` (bytes or str) as a str that always encodes to UTF-8.

    Undecodable bytes and lone surrogates (from argv, the environment or
    surrogateescape) become U+FFFD, so the report is always valid JSON text.
    """
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    try:
        data.encode("utf-8")
        return data
    except UnicodeEncodeError:
        try:
            raw = data.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = data.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace")


def clip(text, limit):
    """Return ``text`` cut to ``limit`` characters (schema maxima)."""
    return text if len(text) <= limit else text[:limit]


def parse_bool(value):
    """Return the boolean an ini/config value spells, or None when it is not one."""
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    return None


def strip_credentials(url, drop_query=False):
    """Return ``url`` without ``user:password@`` (and without its query when asked)."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/@]*@)?(.*)$", url)
    if match:
        url = match.group(1) + match.group(3)
    if drop_query and "?" in url:
        url = url.split("?", 1)[0]
    return url


# -------------------------------------------------------------------- running tools


class Result:
    """What a command printed and how it exited (``rc`` is None on a timeout)."""

    __slots__ = ("err", "out", "rc")

    def __init__(self, rc, out, err=""):
        self.rc = rc
        self.out = out
        self.err = err


class CommandRunner:
    """Run a collection command under LC_ALL=C; return None when it is not installed."""

    def __init__(self, timeout=900):
        self.timeout = timeout
        path = os.environ.get("PATH", "")
        self.path = ":".join(p for p in (path + ":" + SEARCH_PATH).split(":") if p)

    def __call__(self, argv):
        exe = shutil.which(argv[0], path=self.path)
        if exe is None:
            return None
        env = dict(os.environ)
        env.update({"LC_ALL": "C", "LANG": "C", "PATH": self.path})
        try:
            proc = subprocess.run(
                [exe, *list(argv[1:])],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired:
            return Result(None, "", f"timed out after {self.timeout:.0f} s")
        except OSError as exc:
            return Result(126, "", str(exc))
        return Result(proc.returncode, to_text(proc.stdout), to_text(proc.stderr))


def first_line(text):
    """Return the first non-empty line of ``text`` (for short error messages)."""
    for line in text.splitlines():
        if line.strip():
            return clip(line.strip(), 300)
    return ""


def resolve_in_root(root, path):
    """Return the host path of ``path`` inside ``root``, following symlinks as a chroot would.

    An absolute symlink inside a mounted image (``/var/run -> /run``) must resolve
    inside the image, not on the host that runs the agent.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    done = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *([*done, part]))
        if os.path.islink(candidate) and hops < 40:
            hops += 1
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
        else:
            done.append(part)
    return os.path.join(root, *done)


class Context:
    """Where collection looks (``root``), how it runs tools, and what it warned about.

    ``live`` says whether ``root`` is the running system: only then do the running
    kernel and ``needs-restarting`` say anything about it.
    """

    def __init__(self, root="/", run=None, kernel=None, machine=None, live=None):
        self.root = os.path.abspath(root) if root else "/"
        self.run = run if run is not None else CommandRunner()
        uname = os.uname()
        self.kernel = kernel if kernel is not None else uname.release
        self.machine = machine if machine is not None else uname.machine
        self.live = (self.root == "/") if live is None else live
        self.warnings = []
        self.pacman_groups = {}  # name -> %GROUPS%, for IgnoreGroup

    def warn(self, message):
        """Record a warning; it goes into the report and to stderr."""
        message = clip(to_text(message), 1024)
        if message not in self.warnings:
            self.warnings.append(message)

    def path(self, path):
        """Return the host path of ``path`` (absolute, inside the root)."""
        if self.root == "/":
            return path
        return resolve_in_root(self.root, path)

    def exists(self, path):
        return os.path.exists(self.path(path))

    def isdir(self, path):
        return os.path.isdir(self.path(path))

    def read(self, path):
        """Return a file's text, None when it does not exist; warn when it is unreadable."""
        real = self.path(path)
        try:
            with open(real, "rb") as handle:
                return to_text(handle.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.warn(f"cannot read {path}: {exc.strerror or exc}")
            return None

    def list(self, directory, pattern="*"):
        """Return the paths (inside the root) in ``directory`` matching ``pattern``, sorted."""
        real = self.path(directory)
        if not os.path.isdir(real):
            return []
        names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(real, pattern)))
        return [directory.rstrip("/") + "/" + to_text(name) for name in names]

    def command(self, argv, what):
        """Run ``argv``; warn and return None when the tool is missing or fails."""
        result = self.run(argv)
        if result is None:
            self.warn(f"{argv[0]} not found: {what} not collected")
            return None
        if result.rc != 0:
            detail = first_line(result.err) or first_line(result.out)
            self.warn(f"{argv[0]} failed (exit {result.rc}): {what} not collected: {detail}")
            return None
        return result

    def root_options(self, style):
        """Return the options that point a tool at the root (none for the live system)."""
        if self.root == "/":
            return []
        root = self.root
        if style == "dpkg":
            return [f"--admindir={self.path('/var/lib/dpkg')}"]
        if style == "apt":
            return ["-o", f"Dir={root}/"]
        if style == "dnf":
            return [f"--installroot={root}"]
        if style == "zypper":
            return ["--root", root]
        raise ValueError(style)


# ---------------------------------------------------------------- version ordering


def _deb_order(char):
    if char == "~":
        return -1
    if char == "" or char in "0123456789":
        return 0
    if ("a" <= char <= "z") or ("A" <= char <= "Z"):
        return ord(char)
    return ord(char) + 256


def _deb_compare_part(a, b):
    i = j = 0
    digits = "0123456789"
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and a[i] not in digits) or (j < len(b) and b[j] not in digits):
            ac = _deb_order(a[i] if i < len(a) else "")
            bc = _deb_order(b[j] if j < len(b) else "")
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i] in digits and j < len(b) and b[j] in digits:
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i] in digits:
            return 1
        if j < len(b) and b[j] in digits:
            return -1
        if first_diff:
            return -1 if first_diff < 0 else 1
    return 0


def split_deb_version(version):
    """Return (epoch, upstream, revision) of a Debian version string."""
    epoch = ""
    if ":" in version:
        epoch, version = version.split(":", 1)
    revision = ""
    if "-" in version:
        version, revision = version.rsplit("-", 1)
    return epoch, version, revision


def compare_deb_versions(a, b):
    """Return -1, 0 or 1 as Debian version ``a`` sorts before, with or after ``b``."""
    ea, ua, ra = split_deb_version(a)
    eb, ub, rb = split_deb_version(b)
    na, nb = int(ea or 0), int(eb or 0)
    if na != nb:
        return -1 if na < nb else 1
    return _deb_compare_part(ua, ub) or _deb_compare_part(ra, rb)


def _is_alnum(char):
    return ("0" <= char <= "9") or ("a" <= char <= "z") or ("A" <= char <= "Z")


def _take(text, start, digits):
    """Return the end of the run of digits (or of ASCII letters) starting at ``start``."""
    end = start
    while end < len(text):
        char = text[end]
        is_digit = "0" <= char <= "9"
        if not (is_digit if digits else (_is_alnum(char) and not is_digit)):
            break
        end += 1
    return end


def compare_rpm_versions(a, b):
    """Return -1, 0 or 1 like rpm's rpmvercmp (with ``~`` and ``^``)."""
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        while i < len(a) and not _is_alnum(a[i]) and a[i] not in "~^":
            i += 1
        while j < len(b) and not _is_alnum(b[j]) and b[j] not in "~^":
            j += 1
        ca = a[i] if i < len(a) else ""
        cb = b[j] if j < len(b) else ""
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i += 1
            j += 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i += 1
            j += 1
            continue
        if not (ca and cb):
            break
        numeric = "0" <= ca <= "9"
        ei = _take(a, i, numeric)
        ej = _take(b, j, numeric)
        one, two = a[i:ei], b[j:ej]
        if not two:
            return 1 if numeric else -1
        if numeric:
            one = one.lstrip("0")
            two = two.lstrip("0")
            if len(one) != len(two):
                return 1 if len(one) > len(two) else -1
        if one != two:
            return 1 if one > two else -1
        i, j = ei, ej
    if i >= len(a) and j >= len(b):
        return 0
    return -1 if i >= len(a) else 1


def compare_rpm_evr(a, b):
    """Compare (epoch, version, release) tuples the way rpm does (empty epoch is 0)."""
    ea, eb = int(a[0] or 0), int(b[0] or 0)
    if ea != eb:
        return -1 if ea < eb else 1
    return compare_rpm_versions(a[1], b[1]) or compare_rpm_versions(a[2], b[2])


# ----------------------------------------------------------------------- os facts


def parse_os_release(text):
    """Return os-release's KEY=value pairs with lower-cased keys and shell quoting removed."""
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            continue
        try:
            words = shlex.split(value, posix=True)
            value = " ".join(words)
        except ValueError:
            value = value.strip().strip("\"'")
        fields[key.lower()] = value
    return fields


OS_LIMITS = {
    "id": 64,
    "version_id": 64,
    "name": 256,
    "pretty_name": 256,
    "version_codename": 64,
    "id_like": 256,
    "cpe_name": 256,
    "variant_id": 64,
}


def collect_os(ctx):
    """Return the report's ``os`` object from /etc/os-release (or /usr/lib/os-release)."""
    text = ctx.read("/etc/os-release")
    if text is None:
        text = ctx.read("/usr/lib/os-release")
    fields = parse_os_release(text) if text is not None else {}
    if not fields.get("id"):
        ctx.warn("no usable /etc/os-release: os.id reported as 'unknown'")
        fields["id"] = "unknown"
    if fields["id"] == "debian":
        point = ctx.read("/etc/debian_version")
        if point and point.strip():
            fields["debian_version"] = point.strip()
    return {key: clip(value, OS_LIMITS.get(key, 1024)) for key, value in sorted(fields.items())}


def detect_fqdn():
    """Return the host's fully qualified name, like ``hostname -f``."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, None, 0, socket.SOCK_DGRAM, 0, socket.AI_CANONNAME)
    except (OSError, UnicodeError):
        infos = []
    for info in infos:
        canon = info[3]
        if canon and not canon.startswith("localhost"):
            return canon
    return name


# ------------------------------------------------------------------------ packages


# the source package's name and version close each line: Debian's and Ubuntu's
# vulnerability records name source packages (libc6 is glibc's), and a binNMU's
# version (+b1) is not its source's
DPKG_FORMAT = (
    r"${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}"
    r"\t${source:Package}\t${source:Version}\n"
)
RPM_FORMAT = r"%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t%{SOURCERPM}\n"
MAX_SOURCES = 100000


def package_entry(name, epoch, version, release, arch, kind):
    """One package of the report, its fields cut to the schema's maxima."""
    return {
        "name": clip(name, 256),
        "epoch": epoch,
        "version": clip(version, 256),
        "release": clip(release, 256),
        "arch": clip(arch, 32),
        "type": kind,
    }


def source_entry(package, source, source_version, with_epoch=True):
    """The report's ``sources`` entry of a package whose source differs from it in name
    or version, else None. ``with_epoch``: the source's version names the epoch when it
    has one (dpkg's does; rpm's SOURCERPM never does): a binary's epoch may differ from
    its source's (bsdutils 1:2.38.1-5 of util-linux 2.38.1-5)."""
    full = package["version"] + ("-" + package["release"] if package["release"] else "")
    if with_epoch and package["epoch"] not in ("", "0"):
        full = package["epoch"] + ":" + full
    if not source or (source == package["name"] and source_version in ("", full)):
        return None
    entry = {
        "name": package["name"],
        "version": package["version"],
        "release": package["release"],
        "arch": package["arch"],
        "source": clip(source, 256),
    }
    if source_version and source_version != full:
        entry["source_version"] = clip(source_version, 256)
    return entry


def split_source_rpm(text):
    """``glibc-2.34-60.el9.src.rpm`` -> (``glibc``, ``2.34-60.el9``); ("", "") when it is
    not a source rpm's file name (``(none)``: gpg-pubkey, packages built without one)."""
    for suffix in (".src.rpm", ".nosrc.rpm"):
        if text.endswith(suffix):
            parts = text[: -len(suffix)].rsplit("-", 2)
            if len(parts) == 3 and all(parts):
                return parts[0], parts[1] + "-" + parts[2]
    return "", ""


def tab_rows(text, count, what, warn):
    """Yield the fields of each non-blank tab-separated line of ``count`` fields (an
    int, or a tuple of the counts accepted); warn about any other line (``what`` names
    the tool in the warning)."""
    counts = count if isinstance(count, tuple) else (count,)
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) not in counts:
            warn(f"{what} line {number} ignored: {clip(line, 200)!r}")
            continue
        yield fields


def parse_dpkg_query(text, warn, held=None, sources=None):
    """Return installed and held packages from ``dpkg-query -W -f DPKG_FORMAT`` output.

    ``held``, a list, gets ``(name, arch)`` of the packages on hold (selection ``h``:
    what ``apt-mark hold`` and ``dpkg --set-selections`` set). ``sources``, a list, gets
    the ``sources`` entries of packages whose source differs in name or version (lines
    of four fields, from a dpkg too old for ``source:Package``, give none).
    """
    packages = []
    for fields in tab_rows(text, (4, 6), "dpkg-query", warn):
        status, name, version, arch = fields[:4]
        if len(status) < 2 or status[0] not in "ih" or status[1] != "i":
            continue  # removed, config-files, half-installed, ...
        epoch, upstream, revision = split_deb_version(version)
        if not (name and upstream and arch) or (not epoch.isdigit() and epoch):
            warn(f"dpkg package {name or '?'} ignored: bad version {version!r} or arch")
            continue
        entry = package_entry(name, epoch, upstream, revision, arch, "deb")
        packages.append(entry)
        if len(fields) == 6 and sources is not None:
            source = source_entry(entry, fields[4], fields[5])
            if source is not None:
                sources.append(source)
        if status[0] == "h" and held is not None:
            held.append((clip(name, 256), clip(arch, 32)))
    return packages


def parse_rpm_query(text, warn, sources=None):
    """Return packages from ``rpm -qa --qf RPM_FORMAT`` output (gpg-pubkey entries skipped).

    ``sources``, a list, gets the ``sources`` entries (from ``SOURCERPM``) of packages
    whose source rpm differs in name or version-release.
    """
    packages = []
    for fields in tab_rows(text, (5, 6), "rpm", warn):
        name, epoch, version, release, arch = fields[:5]
        if name == "gpg-pubkey":
            continue  # imported signing keys, not software
        epoch = "" if epoch == "(none)" else epoch
        arch = "noarch" if arch == "(none)" else arch
        if not (name and version) or (epoch and not epoch.isdigit()):
            warn(f"rpm package {name or '?'} ignored: bad epoch/version {epoch!r} {version!r}")
            continue
        release = "" if release == "(none)" else release
        entry = package_entry(name, epoch, version, release, arch, "rpm")
        packages.append(entry)
        if len(fields) == 6 and sources is not None:
            source = source_entry(entry, *split_source_rpm(fields[5]), with_epoch=False)
            if source is not None:
                sources.append(source)
    return packages


def find_rpm_db(ctx):
    """Return the rpm database directory inside the root, or None when there is none."""
    for directory in RPM_DB_DIRS:
        for name in RPM_DB_FILES:
            if os.path.isfile(ctx.path(directory + "/" + name)):
                return directory
    return None


def rpm_command(ctx, dbpath, *args):
    """Return an rpm command line for the root (``--root`` plus ``--dbpath`` when not live)."""
    argv = ["rpm"]
    if ctx.root != "/":
        # the host's rpm may keep its own database elsewhere (Debian: ~/.rpmdb)
        argv += ["--root", ctx.root, "--dbpath", dbpath]
    return argv + list(args)


def collect_packages(ctx, held=None, sources=None):
    """Return (packages, families, rpm_dbpath) for every package database found in the root.

    ``held``, a list, gets ``(name, arch)`` of the deb packages on hold; ``sources``, a
    list, the ``sources`` entries of deb and rpm packages.
    """
    packages = []
    families = []
    if ctx.exists("/var/lib/dpkg/status"):
        families.append("deb")
        argv = ["dpkg-query", *ctx.root_options("dpkg"), "-W", "-f=" + DPKG_FORMAT]
        result = ctx.command(argv, "deb packages")
        if result is not None:
            packages += parse_dpkg_query(result.out, ctx.warn, held, sources)
    dbpath = find_rpm_db(ctx)
    if dbpath is not None:
        families.append("rpm")
        result = ctx.command(rpm_command(ctx, dbpath, "-qa", "--qf", RPM_FORMAT), "rpm packages")
        if result is not None:
            found = parse_rpm_query(result.out, ctx.warn, sources)
            if not found and "deb" in families:
                # an empty rpm database on a dpkg host (rpm installed for alien or
                # image building): not an rpm host, so no dnf/zypper repositories
                families.remove("rpm")
                dbpath = None
            packages += found
    if ctx.exists(PACMAN_CONF) or ctx.isdir(PACMAN_DBPATH + "local"):
        pacman_db = pacman_config(ctx)[3]
        if ctx.isdir(pacman_db.rstrip("/") + "/local"):
            families.append("arch")
            packages += collect_pacman_packages(ctx, pacman_db, ctx.pacman_groups)
    if ctx.exists(APK_INSTALLED):
        families.append("apk")
        packages += collect_apk_packages(ctx)
    if not families:
        ctx.warn(
            "no package database found (no /var/lib/dpkg/status, no rpm database, no "
            "pacman or apk database)"
        )
    packages.sort(key=lambda p: (p["name"], p["arch"], p["type"], p["epoch"], p["version"]))
    return packages, families, dbpath


# -------------------------------------------------------------------- held packages

MAX_HELD = 10000
DNF_VERSIONLOCK_CONFS = (  # (plugin configuration, yum's list format)
    ("/etc/dnf/plugins/versionlock.conf", False),  # dnf 4's versionlock plugin
    ("/etc/yum/pluginconf.d/versionlock.conf", True),  # yum's (EL 7)
)
DNF5_VERSIONLOCK = "/etc/dnf/versionlock.toml"  # dnf 5 (built in)
ZYPP_LOCKS = "/etc/zypp/locks"
_ZYPP_NAME_KEYS = ("solvable_name", "solvable_arch")
# libdnf's readings of a package spec, in the order dnf's versionlock plugin tries them:
# name-[epoch:]version-release.arch, name-[epoch:]version-release, name-[epoch:]version,
# name.arch, name (groups: name, epoch, version, release, arch)
_NAME = r"([^:(/=<> ]+)"
_EPOCH = r"(?:([0-9]+):)?"
_VERSION = r"([^-:(/=<> ]+)"
_ARCH = r"([^-:.(/=<> ]+)"
NEVRA_FORMS = tuple(
    re.compile(pattern)
    for pattern in (
        "^" + _NAME + "-" + _EPOCH + _VERSION + "-" + _VERSION + r"\." + _ARCH + "$",
        "^" + _NAME + "-" + _EPOCH + _VERSION + "-" + _VERSION + "()$",
        "^" + _NAME + "-" + _EPOCH + _VERSION + "()()$",
        "^" + _NAME + "()()()" + r"\." + _ARCH + "$",
        "^" + _NAME + "()()()()$",
    )
)


def parse_versionlock_list(text):
    """Return the entries of a dnf/yum versionlock list (comments and blanks dropped)."""
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def parse_dnf5_versionlock(text):
    """Return the package names (globs) dnf 5's versionlock.toml pins.

    The file as dnf 5 writes it (``version = "1.0"``, ``[[packages]]`` with ``name``,
    each with ``[[packages.conditions]]`` of ``key``, ``comparator`` and ``value``), read
    line by line: Python 3.6 has no TOML parser. An entry counts when it pins the
    package: no condition, or an ``=`` one. One that only excludes versions (``!=``) or
    bounds them (``<``, ``>=``...) may let an update through, so it does not. dnf 5
    applies nothing of a file without ``version = "1.0"``.
    """
    entries = []  # [name, comparators]
    section = ""
    version = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line.split("#", 1)[0].replace(" ", "")
            if section == "[[packages]]":
                entries.append(["", []])
            continue
        match = re.match(r"""^(\w+)\s*=\s*(?:"([^"]*)"|'([^']*)')\s*(?:#.*)?$""", line)
        if match is None:
            continue
        key = match.group(1)
        value = match.group(2) if match.group(2) is not None else match.group(3)
        if not section and key == "version":
            version = value
        elif entries and section == "[[packages]]" and key == "name":
            entries[-1][0] = value
        elif entries and section == "[[packages.conditions]]" and key == "comparator":
            entries[-1][1].append(value)
    if version != "1.0":
        return []
    return [
        name for name, comparators in entries if name and (not comparators or "=" in comparators)
    ]


def _spec_matches(pkg, name, epoch, version, release, arch):
    """Tell whether an installed rpm matches one reading of a spec (fields may be globs)."""
    if not fnmatch.fnmatchcase(pkg["name"], name):
        return False
    if epoch and int(epoch) != int(pkg["epoch"] or 0):
        return False
    for pattern, value in ((version, "version"), (release, "release"), (arch, "arch")):
        if pattern and not fnmatch.fnmatchcase(pkg[value], pattern):
            return False
    return True


def versionlock_names(specs, rpms, yum=False):
    """Return the names (globs) a dnf/yum versionlock list locks.

    As dnf's plugin reads it: an entry (``!`` marks an exclude, not a lock) is tried in
    each of its readings in turn; every reading's name is locked, and the first reading
    that matches a package ends the search. Every version of a locked name other than
    the locked ones is excluded, so the installed one is never upgraded. Here only the
    installed packages stand for dnf's package sack. yum's list (``yum``) writes the
    epoch first (``0:bash-4.2.46-34.el7.*``), which dnf cannot read and ignores.
    """
    names = set()
    for spec in specs:
        if spec.startswith("!"):
            continue
        if yum:
            spec = re.sub(r"^[0-9]+:", "", spec)
        for form in NEVRA_FORMS:
            match = form.match(spec)
            if match is None:
                continue
            reading = match.groups()
            names.add(reading[0])
            if any(_spec_matches(p, *reading) for p in rpms):
                break
    return names


def parse_zypp_locks(text):
    """Return the entries of /etc/zypp/locks: {attribute: [values]}, one per blank-line block."""
    entries = []
    current = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if ":" not in line:
            if current:
                entries.append(current)
                current = {}
            continue
        key, value = line.split(":", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    if current:
        entries.append(current)
    return entries


def _zypp_match(pattern, value, mode, case_sensitive):
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    if mode == "exact":
        return value == pattern
    if mode == "glob":
        return fnmatch.fnmatchcase(value, pattern)
    if mode == "regex":
        try:
            return re.search(pattern, value) is not None
        except re.error:
            return False
    if mode in ("word", "words"):
        return re.search(r"\b" + re.escape(pattern) + r"\b", value) is not None
    return pattern in value  # substring, libzypp's default


def zypp_lock_matches(lock, pkg):
    """Tell whether a zypper lock (a ``parse_zypp_locks`` entry) covers an installed rpm.

    A lock keeps zypper from installing or removing what it matches, so a locked
    package is never upgraded. Read as libzypp reads the file: ``type`` (all kinds when
    absent), ``match_type`` (substring when absent), ``case_sensitive`` (off when
    absent), names from ``solvable_name`` or a ``query_string`` restricted to it, and
    ``solvable_arch``. A ``version``, ``repo`` or ``install_status`` restriction still
    counts as holding the whole package: it blocks the upgrade either way (the new
    version cannot come, or the installed one cannot go). Locks on other attributes
    (summary, description...) cannot be checked here and are ignored.
    """
    kinds = lock.get("type", []) + lock.get("kind", [])
    if kinds and "package" not in kinds:
        return False
    mode = (lock.get("match_type") or lock.get("string_type") or ["substring"])[-1]
    case = parse_bool((lock.get("case_sensitive") or ["off"])[-1]) is True
    names = [v for v in lock.get("solvable_name", []) if v]
    if not names:
        # a query string searches the attributes listed empty, or the name when none is
        other = [k for k in lock if k.startswith("solvable_") and k not in _ZYPP_NAME_KEYS]
        if "solvable_name" in lock or not other:
            names = [v for v in lock.get("query_string", []) + lock.get("global_string", []) if v]
    if not names:
        return False
    if not any(_zypp_match(n, pkg["name"], mode, case) for n in names):
        return False
    arches = [v for v in lock.get("solvable_arch", []) if v]
    return not arches or any(_zypp_match(a, pkg["arch"], mode, case) for a in arches)


def collect_held(ctx, packages, deb_held):
    """Return the report's ``held`` list: deb holds, dnf/yum versionlock, zypper locks.

    Every rule is matched against the installed packages here, so the server gets
    plain (name, arch) pairs whatever the package manager's syntax.
    """
    held = set(deb_held)
    rpms = [p for p in packages if p["type"] == "rpm"]
    if rpms:
        names = set()
        seen = set()
        for conf, yum in DNF_VERSIONLOCK_CONFS:
            real = os.path.realpath(ctx.path(conf))
            text = ctx.read(conf) if real not in seen else None
            seen.add(real)  # EL 8+: /etc/yum/pluginconf.d -> ../dnf/plugins
            if text is None:
                continue
            main = parse_ini(text, conf, ctx.warn).get("main", {})
            if parse_bool(main.get("enabled", "1")) is False or not main.get("locklist"):
                continue
            listed = ctx.read(main["locklist"].strip())
            if listed is not None:
                names |= versionlock_names(parse_versionlock_list(listed), rpms, yum)
        dnf5 = ctx.read(DNF5_VERSIONLOCK)
        if dnf5 is not None:
            names.update(parse_dnf5_versionlock(dnf5))
        locks = parse_zypp_locks(ctx.read(ZYPP_LOCKS) or "")
        for pkg in rpms:
            if any(fnmatch.fnmatchcase(pkg["name"], n) for n in names) or any(
                zypp_lock_matches(lock, pkg) for lock in locks
            ):
                held.add((pkg["name"], pkg["arch"]))
    if any(p["type"] == "arch" for p in packages):
        held |= pacman_held(pacman_config(ctx)[0], packages, ctx.pacman_groups)
    if any(p["type"] == "apk" for p in packages):
        held |= apk_held(ctx, packages)
    return [{"name": name, "arch": arch} for name, arch in sorted(held)][:MAX_HELD]


# ----------------------------------------------------------------- apt repositories


def parse_sources_list(text, origin, warn):
    """Return source entries from a one-line-style ``.list`` file."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options = {}
        match = re.match(r"^(\S+)\s+\[([^\]]*)\]\s*(.*)$", line)
        if match:
            kind, option_text, rest = match.groups()
            for item in option_text.split():
                key, sep, value = item.partition("=")
                if not sep:
                    continue
                key = key.lower()
                if key.endswith(("+", "-")):
                    key = key[:-1]  # arch+=/arch-= modify the default list; keep the values
                options[key] = [v for v in value.split(",") if v]
            words = rest.split()
        else:
            words = line.split()
            kind, words = words[0], words[1:]
            if words and words[0].startswith("["):
                warn(f"{origin}:{number}: unclosed [options]: line ignored")
                continue
        if kind not in ("deb", "deb-src"):
            warn(f"{origin}:{number}: unknown source type {kind!r} ignored")
            continue
        if len(words) < 2:
            warn(f"{origin}:{number}: incomplete source line ignored")
            continue
        entries.append(
            {
                "types": [kind],
                "uris": [words[0]],
                "suites": [words[1]],
                "components": words[2:],
                "arches": options.get("arch", []),
                "signed_by": ",".join(options.get("signed-by", [])),
                "enabled": True,
                "origin": f"{origin}:{number}",
            }
        )
    return entries


def parse_deb822(text):
    """Return the paragraphs of a deb822 file as dicts with lower-cased keys."""
    paragraphs = []
    current = {}
    key = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                paragraphs.append(current)
            current, key = {}, None
            continue
        if raw[0] in " \t":
            if key is not None:
                line = raw.strip()
                current[key] += "\n" + ("" if line == "." else line)
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        current[key] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def parse_sources_deb822(text, origin, warn):
    """Return source entries from a deb822 ``.sources`` file."""
    entries = []
    for number, para in enumerate(parse_deb822(text), 1):
        types = para.get("types", "").split()
        uris = para.get("uris", "").split()
        suites = para.get("suites", "").split()
        if not (types and uris and suites):
            warn(f"{origin}: stanza {number} lacks Types, URIs or Suites: ignored")
            continue
        signed_by = para.get("signed-by", "").strip()
        if not signed_by.startswith("-----BEGIN"):
            signed_by = ",".join(signed_by.split())  # paths or fingerprints
        enabled = parse_bool(para.get("enabled", "yes"))
        entries.append(
            {
                "types": types,
                "uris": uris,
                "suites": suites,
                "components": para.get("components", "").split(),
                "arches": para.get("architectures", "").split(),
                "signed_by": signed_by,
                "enabled": enabled is not False,
                "origin": f"{origin}:{number}",
            }
        )
    return entries


# build apt's cache in memory: never write into the root, never race with apt
APT_NO_CACHE = ("-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=")
APT_POLICY_LINE = re.compile(r"^\s*(-?\d+)\s+(\S+)\s+(\S+)\s+(?:(\S+)\s+)?Packages\s*$")


def normalize_uri(uri):
    """Return the form of a source URI that ``apt-cache policy`` prints."""
    return strip_credentials(uri).rstrip("/")


def parse_apt_policy(text):
    """Return {(uri, dist): priority} from the 'Package files' part of ``apt-cache policy``.

    ``dist`` is ``suite/component`` (or the flat path such as ``./``). An index listed
    for several architectures keeps the highest priority.
    """
    priorities = {}
    for line in text.splitlines():
        if line.startswith("Pinned packages"):
            break
        match = APT_POLICY_LINE.match(line)
        if not match:
            continue
        priority, uri, dist = int(match.group(1)), normalize_uri(match.group(2)), match.group(3)
        key = (uri, dist)
        priorities[key] = max(priority, priorities.get(key, priority))
    return priorities


def read_mirror_file(ctx, uri):
    """Return the mirror URLs listed in a ``mirror+file:`` source's file."""
    path = uri.split(":", 1)[1]
    if path.startswith("//"):
        path = path[2:]
    text = ctx.read(path)
    if text is None:
        ctx.warn(f"mirror list {path} not readable: its source is reported without mirrors")
        return []
    urls = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            urls.append(line.split()[0])
    return urls


def expand_apt_entries(ctx, entries, priorities):
    """Return one repository per (uri, suite, component) of the binary (deb) entries."""
    repos = []
    seen = set()
    for entry in entries:
        if "deb" not in entry["types"]:
            continue
        for uri in entry["uris"]:
            clean = strip_credentials(uri)
            urls = [clean]
            if uri.startswith("mirror+file:"):
                urls = [strip_credentials(u) for u in read_mirror_file(ctx, uri)] or urls
            for suite in entry["suites"]:
                flat = suite.endswith("/")
                components = [""] if flat else entry["components"]
                if not components:
                    ctx.warn(f"{entry['origin']}: suite {suite} has no components: ignored")
                    continue
                for component in components:
                    base = normalize_uri(uri)
                    repo_id = " ".join(p for p in (base, suite, component) if p)
                    if repo_id in seen:
                        continue
                    seen.add(repo_id)
                    repo = {
                        "type": "deb",
                        "id": clip(repo_id, 512),
                        "urls": [clip(u, 2048) for u in urls[:64]],
                        "suite": clip(suite, 256),
                        "enabled": entry["enabled"],
                    }
                    if component:
                        repo["component"] = clip(component, 256)
                    if entry["arches"]:
                        repo["arch"] = clip(",".join(entry["arches"]), 32)
                    if entry["signed_by"]:
                        if len(entry["signed_by"]) <= 4096:
                            repo["signed_by"] = entry["signed_by"]
                        else:
                            ctx.warn(f"{entry['origin']}: Signed-By longer than 4096: omitted")
                    dist = f"{suite}/{component}" if component else suite
                    priority = priorities.get((base, dist))
                    if priority is not None:
                        repo["priority"] = max(-100000, min(100000, priority))
                    repos.append(repo)
    return repos


def collect_apt_repositories(ctx):
    """Return apt's binary repositories with the priorities ``apt-cache policy`` prints."""
    entries = []
    files = ["/etc/apt/sources.list", *ctx.list("/etc/apt/sources.list.d")]
    for path in files:
        name = path.rsplit("/", 1)[-1]
        if not (name == "sources.list" or name.endswith((".list", ".sources"))):
            continue  # apt ignores *.disabled, *.save, *.distUpgrade ...
        text = ctx.read(path)
        if text is None:
            continue
        if path.endswith(".sources"):
            entries += parse_sources_deb822(text, path, ctx.warn)
        else:
            entries += parse_sources_list(text, path, ctx.warn)
    priorities = {}
    if entries:
        argv = ["apt-cache", *ctx.root_options("apt"), *APT_NO_CACHE, "policy"]
        result = ctx.command(argv, "apt repository priorities")
        if result is not None:
            priorities = parse_apt_policy(result.out)
    return expand_apt_entries(ctx, entries, priorities)


# ---------------------------------------------------------- dnf / yum / zypper repos


VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)(?::([-+])([^}]*))?\}|([A-Za-z0-9_]+))")


def substitute(text, variables):
    """Expand ``$var``, ``${var}``, ``${var:-word}`` and ``${var:+word}`` as dnf and zypp do.

    Unknown variables stay as they are, as in dnf.
    """

    def replace(match):
        if match.group(4) is not None:
            return variables.get(match.group(4), match.group(0))
        name, op, word = match.group(1), match.group(2), match.group(3)
        value = variables.get(name)
        if op == "-":
            return value if value else substitute(word, variables)
        if op == "+":
            return substitute(word, variables) if value else ""
        return value if value is not None else match.group(0)

    return VARIABLE.sub(replace, text)


def parse_ini(text, origin, warn):
    """Return {section: {key: value}} of a dnf/zypper ini file, or {} when it does not parse."""
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    try:
        parser.read_string(text, source=origin)
    except configparser.Error as exc:
        warn(f"{origin}: not parsed: {first_line(str(exc))}")
        return {}
    return {name: dict(parser.items(name)) for name in parser.sections()}


def ini_sections(ctx, directory, pattern):
    """Yield (name, section) of each ini file matching ``pattern`` in ``directory``, in order."""
    for path in ctx.list(directory, pattern):
        text = ctx.read(path)
        if text is not None:
            yield from parse_ini(text, path, ctx.warn).items()


def read_variables(ctx, directories):
    """Return the variables defined by files in ``directories`` (first line of each file)."""
    variables = {}
    for directory in directories:
        for path in ctx.list(directory):
            if not os.path.isfile(ctx.path(path)):
                continue
            text = ctx.read(path)
            if text is not None:
                variables[path.rsplit("/", 1)[-1]] = text.split("\n", 1)[0]
    return variables


def detect_releasever(ctx, dbpath, os_fields):
    """Return dnf's $releasever: the ``system-release(releasever)`` provide, else VERSION_ID."""
    if dbpath is not None:
        argv = rpm_command(
            ctx,
            dbpath,
            "-q",
            "--whatprovides",
            "system-release(releasever)",
            "--qf",
            r"%{NAME}\t%{VERSION}[\t%{PROVIDENAME}=%{PROVIDEVERSION}]\n",
        )
        result = ctx.run(argv)
        if result is not None and result.rc == 0 and result.out.strip():
            fields = result.out.splitlines()[0].split("\t")
            for provide in fields[2:]:
                name, _, version = provide.partition("=")
                if name == "system-release(releasever)" and version:
                    return version
            if len(fields) > 1 and fields[1]:
                return fields[1]
    return os_fields.get("version_id", "")


def base_variables(ctx, releasever):
    variables = {
        "arch": ctx.machine,
        "basearch": BASEARCH.get(ctx.machine, ctx.machine),
        "releasever": releasever,
    }
    return variables


def add_release_parts(variables):
    """Add dnf5/zypp's $releasever_major and $releasever_minor."""
    major, _, minor = variables.get("releasever", "").partition(".")
    variables.setdefault("releasever_major", major)
    variables.setdefault("releasever_minor", minor)
    return variables


def split_urls(value):
    return [u for u in re.split(r"[\s,]+", value) if u]


def rpm_repository(kind, repo_id, section, variables, drop_query=False):
    """Return a schema repository object for one dnf or zypper ini section."""
    name = substitute(section.get("name", ""), variables)
    repo = {"type": kind, "id": clip(repo_id, 512), "urls": []}
    if name:
        repo["name"] = clip(name, 512)
    urls = [substitute(u, variables) for u in split_urls(section.get("baseurl", ""))]
    repo["urls"] = [clip(strip_credentials(u, drop_query), 2048) for u in urls][:64]
    for key in ("mirrorlist", "metalink"):
        value = substitute(section.get(key, "").strip(), variables)
        if value:
            repo[key] = clip(strip_credentials(value, drop_query), 2048)
    enabled = parse_bool(section.get("enabled", "1"))
    repo["enabled"] = enabled is not False
    try:
        priority = int(section.get("priority", "99").strip())
    except ValueError:
        priority = 99
    repo["priority"] = max(-100000, min(100000, -priority))
    return repo


def collect_dnf_repositories(ctx, dbpath, os_fields, releasever):
    """Return the dnf/yum repositories defined in the root's configuration files.

    The ini files are read instead of ``dnf repolist -v``: that works offline and with
    ``--root``, sees disabled repositories, does not depend on dnf's output format or
    cache state, and costs no metadata download. Variables are expanded as dnf would.
    """
    config_path = "/etc/dnf/dnf.conf" if ctx.exists("/etc/dnf/dnf.conf") else "/etc/yum.conf"
    config_text = ctx.read(config_path)
    config = parse_ini(config_text, config_path, ctx.warn) if config_text else {}
    main = config.pop("main", {})
    directories = split_urls(main.get("reposdir", "")) or list(DNF_REPO_DIRS)
    variables = base_variables(ctx, releasever)
    variables.update(read_variables(ctx, DNF_VAR_DIRS))
    add_release_parts(variables)
    sections = list(config.items())
    for directory in directories:
        sections += ini_sections(ctx, directory, "*.repo")
    return [rpm_repository("rpm", repo_id, section, variables) for repo_id, section in sections]


def collect_dnf_modules(ctx):
    """Return enabled module streams from /etc/dnf/modules.d (dnf's own state files)."""
    modules = []
    for section_name, section in ini_sections(ctx, "/etc/dnf/modules.d", "*.module"):
        if section.get("state", "").strip() != "enabled":
            continue
        module = {
            "name": clip(section.get("name", section_name).strip() or section_name, 256),
            "stream": clip(section.get("stream", "").strip(), 256),
        }
        modules.append(module)
    return modules


def zypper_releasever(ctx, os_fields):
    """Return zypp's $releasever: the base product's version, else VERSION_ID."""
    text = ctx.read("/etc/products.d/baseproduct")
    if text:
        try:
            version = ElementTree.fromstring(text.encode("utf-8")).findtext("version")
        except ElementTree.ParseError:
            version = None
        if version:
            return version.strip()
    return os_fields.get("version_id", "")


def collect_zypper_repositories(ctx, os_fields):
    """Return zypper's repositories from /etc/zypp/repos.d (query strings removed from URLs).

    SUSE's update URLs carry subscription credentials in the query string, so the query
    part of every zypper URL is dropped before it leaves the host.
    """
    variables = base_variables(ctx, zypper_releasever(ctx, os_fields))
    variables.update(read_variables(ctx, ["/etc/zypp/vars.d"]))
    add_release_parts(variables)
    return [
        rpm_repository("zypper", alias, section, variables, drop_query=True)
        for alias, section in ini_sections(ctx, "/etc/zypp/repos.d", "*.repo")
    ]


# ---------------------------------------------------------------- pacman (Arch Linux)

PACMAN_CONF = "/etc/pacman.conf"
PACMAN_DBPATH = "/var/lib/pacman/"
PACMAN_DESC_MAX = 1 << 20  # one local desc; real ones are a few KiB
PACMAN_INCLUDE_DEPTH = 10
PACMAN_KERNELS = frozenset(
    ("linux", "linux-lts", "linux-zen", "linux-hardened", "linux-rt", "linux-rt-lts")
)


def parse_pacman_desc(text):
    """Return ``{FIELD: [values]}`` of a pacman ``desc`` file (``%FIELD%`` then values)."""
    fields = {}
    key = None
    for line in text.splitlines():
        if not line:
            key = None
        elif key is None and len(line) > 2 and line[0] == "%" and line[-1] == "%":
            key = line[1:-1]
            fields[key] = []
        elif key is not None:
            fields[key].append(line)
    return fields


def split_pacman_version(version):
    """Return (epoch, pkgver, pkgrel) of ``[epoch:]pkgver-pkgrel`` as libalpm splits it."""
    epoch = ""
    match = re.match(r"^([0-9]*):", version)
    if match:
        epoch = match.group(1).lstrip("0")
        version = version[match.end() :]
    pkgver, dash, pkgrel = version.rpartition("-")
    if not dash:
        return epoch, version, ""
    return epoch, pkgver, pkgrel


def collect_pacman_packages(ctx, dbpath, groups=None):
    """Return the packages of pacman's local database (what ``pacman -Q`` lists).

    Read from ``DBPath/local/*/desc`` directly, so that it works the same on the live
    system and under ``--root`` (where the host's pacman may not exist). ``groups``, a
    dict, gets each package's %GROUPS% (for IgnoreGroup).
    """
    packages = []
    for entry in ctx.list(dbpath.rstrip("/") + "/local"):
        real = ctx.path(entry + "/desc")
        try:
            if os.path.getsize(real) > PACMAN_DESC_MAX:
                ctx.warn(f"{entry}/desc is larger than {PACMAN_DESC_MAX} bytes: skipped")
                continue
        except OSError:
            continue  # ALPM_DB_VERSION and other files that are not package folders
        fields = parse_pacman_desc(ctx.read(entry + "/desc") or "")
        name = (fields.get("NAME") or [""])[0]
        version = (fields.get("VERSION") or [""])[0]
        arch = (fields.get("ARCH") or [""])[0]
        if not (name and version and arch):
            ctx.warn(f"{entry}/desc lacks %NAME%, %VERSION% or %ARCH%: skipped")
            continue
        epoch, pkgver, pkgrel = split_pacman_version(version)
        packages.append(package_entry(name, epoch, pkgver, pkgrel, arch, "arch"))
        if groups is not None:
            groups[name] = fields.get("GROUPS") or []
    return packages


def parse_pacman_conf(ctx, path=PACMAN_CONF, sections=None, current=None, depth=0):
    """Return pacman.conf as ``[(section, [(key, value)])]`` with ``Include =`` expanded.

    As pacman reads it: an Include (a glob, files in name order) is read in place, in
    the section it appears in; keys without ``=`` (``Color``) get the value "".
    """
    if sections is None:
        sections = []
    text = ctx.read(path)
    if text is None:
        if depth:
            ctx.warn(f"{path} (Include) does not exist")
        return sections
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = (line[1:-1].strip(), [])
            sections.append(current)
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip() if eq else ""
        if current is None:
            ctx.warn(f"{path}: {key} outside a section: ignored")
            continue
        if key == "Include":
            if depth >= PACMAN_INCLUDE_DEPTH:
                ctx.warn(f"{path}: Include nested too deep: {value} ignored")
                continue
            found = ctx.list(os.path.dirname(value) or "/", os.path.basename(value))
            if not found:
                ctx.warn(f"{path}: Include = {value} matches no file")
            for included in found:
                parse_pacman_conf(ctx, included, sections, current, depth + 1)
            continue
        current[1].append((key, value))
    return sections


def pacman_architecture(ctx, options):
    """Return pacman's ``$arch``: the first Architecture, ``auto`` being ``uname -m``."""
    for key, value in options:
        if key == "Architecture" and value.split():
            first = value.split()[0]
            return ctx.machine if first == "auto" else first
    return ctx.machine


def pacman_config(ctx):
    """Return (options as pairs, repository sections, $arch, DBPath) of pacman.conf."""
    sections = parse_pacman_conf(ctx)
    options = []
    repos = []
    for name, pairs in sections:
        if name == "options":
            options += pairs
        else:
            repos.append((name, pairs))
    dbpath = PACMAN_DBPATH
    for key, value in options:
        if key == "DBPath" and value:
            dbpath = value
    return options, repos, pacman_architecture(ctx, options), dbpath


def collect_pacman_repositories(ctx, repos, arch):
    """Return the sync repositories as pacman resolves them, first one first.

    Servers get ``$repo`` and ``$arch`` expanded; the priority is minus the position in
    pacman.conf, because the first repository that has a package is the one pacman
    takes it from. A repository whose ``Usage`` excludes Sync and Upgrade is left out.
    """
    out = []
    for name, pairs in repos:
        usage = " ".join(v for k, v in pairs if k == "Usage").split()
        if usage and not ({"All", "Sync", "Upgrade"} & set(usage)):
            continue
        urls = []
        for key, value in pairs:
            if key == "Server" and value:
                url = value.replace("$repo", name).replace("$arch", arch).rstrip("/")
                url = strip_credentials(url)
                if url and url not in urls and len(url) <= 2048:
                    urls.append(url)
        if not urls:
            ctx.warn(f"pacman repository [{name}] has no Server: not reported")
            continue
        out.append(
            {
                "type": "arch",
                "id": clip(name, 512),
                "name": clip(name, 512),
                "urls": urls[:64],
                "arch": clip(arch, 32),
                "priority": -len(out),
            }
        )
    return out


def pacman_held(options, packages, groups):
    """Return (name, arch) of the installed packages IgnorePkg or IgnoreGroup names."""
    patterns = []
    ignored_groups = set()
    for key, value in options:
        if key == "IgnorePkg":
            patterns += value.split()
        elif key == "IgnoreGroup":
            ignored_groups.update(value.split())
    held = set()
    for pkg in packages:
        if pkg["type"] != "arch":
            continue
        if any(fnmatch.fnmatchcase(pkg["name"], p) for p in patterns) or (
            ignored_groups & set(groups.get(pkg["name"], ()))
        ):
            held.add((pkg["name"], pkg["arch"]))
    return held


def pacman_reboot_needed(ctx, packages):
    """Return whether the running kernel is gone from disk, as after an Arch kernel update.

    Arch's kernel packages replace ``/usr/lib/modules/<version>`` when they are
    upgraded, so a running kernel whose modules folder is gone has been replaced by a
    newer package on disk. None when no kernel package is installed (a container).
    """
    if not any(p["type"] == "arch" and p["name"] in PACMAN_KERNELS for p in packages):
        return None
    return not ctx.isdir("/usr/lib/modules/" + ctx.kernel)


def parse_pacman_qu(text):
    """Return updates from ``pacman -Qu`` lines: ``name old -> new [ignored]``."""
    updates = []
    for line in text.splitlines():
        match = re.match(r"^(\S+) (\S+) -> (\S+)", line.strip())
        if match and "[ignored]" not in line:
            updates.append(
                {"name": match.group(1), "version": match.group(3), "arch": "", "security": False}
            )
    return updates


# -------------------------------------------------------------------- apk (Alpine)

APK_INSTALLED = "/lib/apk/db/installed"
APK_REPOSITORIES = "/etc/apk/repositories"
APK_REPOSITORIES_D = "/etc/apk/repositories.d"
APK_WORLD = "/etc/apk/world"
APK_ARCH = "/etc/apk/arch"
APK_KERNELS = ("linux-lts", "linux-virt", "linux-edge", "linux-rpi", "linux-stable")
APK_CONSTRAINT = re.compile(r"^([^=<>~@!\s]+)(@[^=<>~\s]+)?((?:<=|>=|<~|>~|[<>=~])\S+)?$")
APK_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
APK_PINNED_NAME = re.compile(r"^[A-Za-z0-9_.+@-]{1,256}$")  # what the server accepts
MAX_PINNED = 10000


def collect_apk_packages(ctx):
    """Return the packages of apk's installed database (what ``apk info -v`` lists)."""
    text = ctx.read(APK_INSTALLED) or ""
    packages = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if len(line) > 2 and line[1] == ":" and line[0] in "PVA" and line[0] not in fields:
                fields[line[0]] = line[2:]
        if not fields:
            continue
        if not all(fields.get(k) for k in "PVA"):
            ctx.warn(f"{APK_INSTALLED}: a package without P:, V: or A: skipped")
            continue
        packages.append(package_entry(fields["P"], "", fields["V"], "", fields["A"], "apk"))
    return packages


def collect_apk_repositories(ctx):
    """Return /etc/apk/repositories' repositories, a tagged one (``@edge URL``) with its tag.

    apk takes a package from a tagged repository only when the world file pins the
    package to that tag (``pkg@edge``); untagged packages never come from it. A tagged
    repository is reported with ``tag`` (without the @) and ``pinned``, the names the
    world file pins to it, and offers the server only those.
    """
    arch = (ctx.read(APK_ARCH) or "").strip() or ctx.machine
    files = [APK_REPOSITORIES, *ctx.list(APK_REPOSITORIES_D, "*.list")]
    pins = apk_pins(ctx)
    out = []
    seen = set()
    for path in files:
        for raw in (ctx.read(path) or "").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            tag = ""
            words = line.split()
            if words[0].startswith("@") and len(words) > 1:
                tag, words = words[0], words[1:]
            url = strip_credentials(words[-1].rstrip("/"))
            if not re.match(r"^(https?|ftp)://", url):
                if url.startswith("/"):
                    ctx.warn(f"apk repository {url} is a local folder: not reported")
                continue
            if tag and not APK_TAG.match(tag[1:]):
                ctx.warn(f"apk repository tag {clip(tag, 80)!r}: not a tag, not reported")
                continue
            repo_id = (tag + " " + url).strip()
            if repo_id in seen or len(url) > 2048:
                continue
            seen.add(repo_id)
            repo = {"type": "apk", "id": clip(repo_id, 512), "urls": [url],
                    "arch": clip(arch, 32), "priority": 0}  # fmt: skip
            if tag:
                repo["tag"] = tag[1:]
                repo["pinned"] = sorted(pins.get(tag[1:], ()))[:MAX_PINNED]
            out.append(repo)
    return out


def apk_pins(ctx):
    """Return {tag: names} of the world file's ``pkg@tag`` entries (any constraint)."""
    pins = {}
    for word in (ctx.read(APK_WORLD) or "").split():
        match = APK_CONSTRAINT.match(word)
        if match and match.group(2) and APK_PINNED_NAME.match(match.group(1)):
            pins.setdefault(match.group(2)[1:], set()).add(match.group(1))
    return pins


def apk_held(ctx, packages):
    """Return (name, arch) of installed packages a world constraint keeps at a version.

    ``pkg=1.2``, ``pkg<2``, ``pkg~1.2`` (any version operator) hold the package where
    it is, as far as an upgrade is concerned; a bare ``pkg`` or ``pkg@tag`` does not.
    """
    names = set()
    for word in (ctx.read(APK_WORLD) or "").split():
        match = APK_CONSTRAINT.match(word)
        if match and match.group(3):
            names.add(match.group(1))
    return {(p["name"], p["arch"]) for p in packages if p["type"] == "apk" and p["name"] in names}


def apk_reboot_needed(ctx, packages):
    """Return whether the running kernel's modules are gone (its package was upgraded).

    Alpine's kernel packages (linux-lts, linux-virt...) replace
    ``/lib/modules/<version>`` on upgrade. None when no kernel package is installed.
    """
    if not any(p["type"] == "apk" and p["name"] in APK_KERNELS for p in packages):
        return None
    return not ctx.isdir("/lib/modules/" + ctx.kernel)


# ------------------------------------------------------------------ reboot required


def _newest(candidates, compare):
    best = None
    for item in candidates:
        if best is None or compare(item[0], best[0]) > 0:
            best = item
    return best


def kernel_reboot_needed(packages, running):
    """Return whether ``running`` (uname -r) is older than the newest installed kernel.

    None when no installed kernel package matches the running kernel (containers,
    custom kernels): then the packages say nothing about it.
    """
    deb = []
    rpm = []
    for pkg in packages:
        if pkg["type"] == "deb":
            match = DEB_KERNEL.match(pkg["name"])
            if match and not pkg["name"].endswith(("-dbg", "-dbgsym")):
                release = match.group(1)
                flavour = re.sub(r"^\d+(?:\.\d+)*-[^-]+-?", "", release)
                version = pkg["version"] + ("-" + pkg["release"] if pkg["release"] else "")
                if pkg["epoch"]:
                    version = pkg["epoch"] + ":" + version
                deb.append((version, release, flavour))
        elif pkg["name"] in RPM_KERNELS:
            evr = (pkg["epoch"], pkg["version"], pkg["release"])
            names = {
                f"{pkg['version']}-{pkg['release']}.{pkg['arch']}",  # Red Hat family, Amazon
                f"{pkg['version']}-{pkg['release']}",
            }
            short = pkg["release"].rsplit(".", 1)[0]
            flavour = pkg["name"][len("kernel-") :] if pkg["name"] != "kernel" else ""
            if flavour:
                names.add(f"{pkg['version']}-{short}-{flavour}")  # SUSE: 6.4.0-150600.23.7-default
            rpm.append((evr, names, pkg["name"]))
    for version, release, flavour in deb:
        if release == running:
            same = [(v, r) for v, r, f in deb if f == flavour]
            newest = _newest(same, compare_deb_versions)
            return compare_deb_versions(version, newest[0]) < 0
    for evr, names, name in rpm:
        if running in names:
            same = [(e, n) for e, n, nm in rpm if nm == name]
            newest = _newest(same, compare_rpm_evr)
            return compare_rpm_evr(evr, newest[0]) < 0
    return None


def detect_reboot_required(ctx, packages, families):
    """Return True/False when the host can tell whether it needs a reboot, else None."""
    if ctx.exists("/run/reboot-required") or ctx.exists("/var/run/reboot-required"):
        return True  # Debian/Ubuntu (update-notifier, unattended-upgrades, kernel hooks)
    if ctx.exists("/run/reboot-needed"):
        return True  # SUSE (zypp writes it after patches that need a reboot)
    if not ctx.live:
        return None  # the running kernel is not the root's
    if "arch" in families:
        found = pacman_reboot_needed(ctx, packages)
        if found is not None:
            return found
    if "apk" in families:
        found = apk_reboot_needed(ctx, packages)
        if found is not None:
            return found
    if "rpm" in families:
        if ctx.isdir("/etc/zypp"):
            result = ctx.run(["zypper", "--non-interactive", "needs-rebooting"])
            if result is not None and result.rc in (0, 102):
                return result.rc == 102
        else:
            result = ctx.run(["needs-restarting", "-r"])
            if result is not None and result.rc in (0, 1):
                return result.rc == 1  # covers kernel, glibc, systemd... (dnf-utils)
    running = kernel_reboot_needed(packages, ctx.kernel)
    if running is None and any(
        p["name"] in RPM_KERNELS or DEB_KERNEL.match(p["name"]) for p in packages
    ):
        ctx.warn(f"running kernel {ctx.kernel} is not an installed kernel package: reboot unknown")
    return running


# ------------------------------------------------------------------------- updates


def parse_apt_simulation(text):
    """Return updates from ``apt-get -s dist-upgrade`` 'Inst' lines (upgrades only)."""
    updates = []
    pattern = re.compile(r"^Inst (\S+) \[([^\]]+)\] \((\S+) (.*?)(?: \[([^\]]+)\])?\)")
    for line in text.splitlines():
        match = pattern.match(line)
        if not match:
            continue  # new installs have no [old version]; Conf/Remv lines
        name, _old, new, origins, arch = match.groups()
        labels = [o.strip() for o in origins.split(",") if o.strip()]
        security = [o for o in labels if "security" in o.lower()]
        item = {"name": name, "version": new, "arch": arch or "all", "security": bool(security)}
        chosen = (security or labels or [""])[0]
        if chosen:
            item["repository"] = clip(chosen, 512)
        updates.append(item)
    return updates


def split_nevra(nevra):
    """Return (name, evr, arch) of ``name-[epoch:]version-release.arch``."""
    rest, _, arch = nevra.rpartition(".")
    rest, _, release = rest.rpartition("-")
    name, _, version = rest.rpartition("-")
    return name, f"{version}-{release}", arch


def normalize_evr(evr):
    """Drop a zero epoch so that '0:1.0-1' and '1.0-1' compare equal."""
    return evr[2:] if evr.startswith("0:") else evr


def parse_dnf_check_update(text):
    """Return (name, arch, evr, repo) for each line of ``dnf check-update`` output."""
    rows = []
    pending = []
    for line in text.splitlines():
        if not line.strip():
            if rows:
                break  # "Obsoleting Packages" and what follows
            continue
        if line.startswith(("Last metadata", "Obsoleting", "Security:")):
            continue
        pending += line.split()
        if len(pending) < 3:
            continue  # dnf wraps long names onto the next line
        name_arch, evr, repo = pending[:3]
        pending = []
        name, _, arch = name_arch.rpartition(".")
        if name:
            rows.append((name, arch, normalize_evr(evr), repo))
    return rows


def parse_updateinfo_list(text):
    """Return {(name, arch)} of packages in ``dnf updateinfo list`` output lines."""
    found = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and "-" in fields[-1] and "." in fields[-1]:
            name, _evr, arch = split_nevra(fields[-1])
            if name:
                found.add((name, arch))
    return found


def collect_dnf_updates(ctx, releasever):
    """Return updates dnf (or yum) sees; those named by a security advisory are flagged."""
    tool = "dnf" if ctx.run(["dnf", "--version"]) is not None else "yum"
    base = [tool, "-q", *ctx.root_options("dnf")]
    if ctx.root != "/" and releasever:
        base.append(f"--releasever={releasever}")
    result = ctx.run([*base, "check-update"])
    if result is None:
        ctx.warn("neither dnf nor yum found: updates not collected")
        return None
    if result.rc not in (0, 100):
        ctx.warn(f"{tool} check-update failed (exit {result.rc}): {first_line(result.err)}")
        return None
    security = set()
    if tool == "dnf":
        sec = ctx.run([*base, "updateinfo", "list", "--updates", "--security"])
    else:
        sec = ctx.run([*base, "--security", "updateinfo", "list", "updates"])
    if sec is not None and sec.rc == 0:
        security = parse_updateinfo_list(sec.out)
    else:
        ctx.warn(f"{tool} updateinfo failed: security flags not collected")
    updates = []
    for name, arch, evr, repo in parse_dnf_check_update(result.out):
        item = {"name": name, "version": evr, "arch": arch, "security": (name, arch) in security}
        item["repository"] = clip(repo, 512)
        updates.append(item)
    return updates


def parse_zypper_xml(text):
    """Return the <update> elements of zypper --xmlout output (empty on bad XML)."""
    start = text.find("<?xml")
    try:
        root = ElementTree.fromstring(text[start if start >= 0 else 0 :].encode("utf-8"))
    except ElementTree.ParseError:
        return []
    return root.iter("update")


def parse_patch_conflicts(text):
    """Return the package names a ``zypper info -t patch`` output says the patches fix."""
    names = set()
    in_conflicts = False
    for line in text.splitlines():
        if line.startswith("Conflicts"):
            in_conflicts = True
            value = line.split(":", 1)[1].strip()
            if value and not value.startswith("["):
                names.add(value.split()[0])
            continue
        if in_conflicts and line.startswith((" ", "\t")) and line.strip():
            names.add(line.split()[0])
        else:
            in_conflicts = False
    cleaned = set()
    for name in names:
        name = name.split(":", 1)[-1] if name.startswith("srcpackage:") else name
        cleaned.add(name)
        cleaned.add(name.rsplit(".", 1)[0])  # name.arch
    return cleaned


def collect_zypper_updates(ctx):
    """Return package updates zypper sees; those fixed by a needed security patch are flagged."""
    base = ["zypper", *ctx.root_options("zypper"), "--non-interactive", "--no-refresh"]
    result = ctx.command([*base, "--xmlout", "list-updates"], "zypper updates")
    if result is None:
        return None
    updates = []
    for node in parse_zypper_xml(result.out):
        if node.get("kind", "package") != "package":
            continue
        source = node.find("source")
        item = {
            "name": node.get("name", ""),
            "version": normalize_evr(node.get("edition", "")),
            "arch": node.get("arch", "") or "noarch",
            "security": False,
        }
        if source is not None and source.get("alias"):
            item["repository"] = clip(source.get("alias"), 512)
        if item["name"] and item["version"]:
            updates.append(item)
    # --category is not applied to --xmlout output (zypper 1.14): filter here
    patches = ctx.command([*base, "--xmlout", "list-patches"], "zypper security patches")
    names = [
        n.get("name")
        for n in (parse_zypper_xml(patches.out) if patches else [])
        if n.get("kind") == "patch"
        and n.get("category") == "security"
        and n.get("status", "needed") == "needed"
        and n.get("name")
    ]
    fixed = set()
    for start in range(0, len(names), 100):
        info = ctx.command([*base, "info", "-t", "patch", *names[start : start + 100]], "patches")
        if info is not None:
            fixed |= parse_patch_conflicts(info.out)
    for item in updates:
        item["security"] = item["name"] in fixed
    return updates


def collect_updates(ctx, families, releasever, packages=()):
    """Return what the host's package manager would update, or None when it cannot tell."""
    if "deb" in families:
        argv = [
            "apt-get",
            *ctx.root_options("apt"),
            *APT_NO_CACHE,
            "-o",
            "Debug::NoLocking=1",
            "-s",
            "-q",
            "dist-upgrade",
        ]
        result = ctx.command(argv, "apt updates")
        return parse_apt_simulation(result.out) if result is not None else None
    if "rpm" in families:
        if ctx.isdir("/etc/zypp/repos.d"):
            return collect_zypper_updates(ctx)
        return collect_dnf_updates(ctx, releasever)
    if "arch" in families:
        return collect_pacman_updates(ctx, packages)
    return None


def collect_pacman_updates(ctx, packages):
    """Return ``pacman -Qu`` (against the sync databases as last synced; 1: none)."""
    argv = ["pacman"]
    if ctx.root != "/":
        dbpath = pacman_config(ctx)[3]
        argv += ["--root", ctx.root, "--dbpath", ctx.path(dbpath), "--config",
                 ctx.path(PACMAN_CONF)]  # fmt: skip
    result = ctx.run([*argv, "-Qu"])
    if result is None or result.rc not in (0, 1):
        detail = first_line(result.err) if result is not None else "not installed"
        ctx.warn(f"pacman -Qu failed: updates not collected: {detail}")
        return None
    arches = {p["name"]: p["arch"] for p in packages if p["type"] == "arch"}
    updates = parse_pacman_qu(result.out)
    for update in updates:
        update["arch"] = arches.get(update["name"], "")
    return updates


# -------------------------------------------------------------------------- report


def collect_report(ctx, host, tags=(), hook=False, updates=False, now=None):
    """Collect everything and return the report dict (schema report-v1).

    ``hook`` collects packages only: without ``repositories`` the server keeps the
    host's previous ones.
    """
    os_fields = collect_os(ctx)
    deb_held = []
    sources = []
    packages, families, dbpath = collect_packages(ctx, deb_held, sources)
    report = {
        "version": 1,
        "host": host,
        "os": os_fields,
        "kernel": clip(ctx.kernel, 256) or "unknown",
        "arch": clip(ctx.machine, 32) or "unknown",
        "tags": list(tags),
        "packages": packages,
    }
    if sources:
        sources.sort(key=lambda s: (s["name"], s["arch"], s["version"], s["release"]))
        report["sources"] = sources[:MAX_SOURCES]
    releasever = ""
    if "rpm" in families and not ctx.isdir("/etc/zypp/repos.d"):
        releasever = detect_releasever(ctx, dbpath, os_fields)
    if not hook:
        # only the package managers of the package databases found: a Debian host with
        # dnf installed (to build images) does not install from /etc/yum.repos.d
        repos = []
        if "deb" in families and ctx.isdir("/etc/apt"):
            repos += collect_apt_repositories(ctx)
        zypper = ctx.isdir("/etc/zypp/repos.d")
        if "rpm" in families and zypper:
            repos += collect_zypper_repositories(ctx, os_fields)
        elif "rpm" in families:
            repos += collect_dnf_repositories(ctx, dbpath, os_fields, releasever)
            if ctx.isdir("/etc/dnf/modules.d"):
                report["modules"] = collect_dnf_modules(ctx)
        if "arch" in families:
            _options, sync, arch, _dbpath = pacman_config(ctx)
            repos += collect_pacman_repositories(ctx, sync, arch)
        if "apk" in families:
            repos += collect_apk_repositories(ctx)
        report["repositories"] = repos[:10000]
        if updates:
            found = collect_updates(ctx, families, releasever, packages)
            if found is not None:
                report["updates"] = [u for u in found if u["name"] and u["version"] and u["arch"]]
    report["held"] = collect_held(ctx, packages, deb_held)
    report["reboot_required"] = detect_reboot_required(ctx, packages, families)
    report["agent"] = {
        "name": AGENT_NAME,
        "version": __version__,
        "collected_at": round(time.time() if now is None else now, 3),
        "warnings": ctx.warnings[:MAX_WARNINGS],
    }
    return report


def encode_report(report):
    """Return the gzip-compressed UTF-8 JSON body of ``report``."""
    text = json.dumps(report, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return gzip.compress(to_text(text).encode("utf-8"), 6)


# ------------------------------------------------------------------------- sending


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: the bearer token must only go to the configured server."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def post_report(url, token, body, timeout, ca_file="", extra_headers=None):
    """POST ``body``; return (status, response text, Retry-After), raise OSError if unreachable."""
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=ca_file or None)
    handlers = [NoRedirect(), urllib.request.HTTPSHandler(context=context)]
    opener = urllib.request.build_opener(*handlers)
    headers = {
        "Authorization": "Bearer " + token,
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "User-Agent": f"{AGENT_NAME}/{__version__}",
    }
    headers.update(extra_headers or {})
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, to_text(response.read(65536)), None
    except urllib.error.HTTPError as exc:
        try:
            text = to_text(exc.read(65536))
        except OSError:
            text = ""
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        exc.close()
        return exc.code, text, retry_after
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None
    except (OSError, ValueError) as exc:  # ConnectionError, socket.timeout, http.client errors
        raise OSError(str(exc) or exc.__class__.__name__) from None


class Outcome:
    """How delivering one report ended: 'sent', 'rejected' or 'failed'."""

    def __init__(self, state, status=None, detail=""):
        self.state = state
        self.status = status
        self.detail = detail


def deliver(settings, body, sleep=time.sleep, post=post_report):
    """Send ``body`` with retries, exponential backoff and jitter; return an Outcome."""
    url = settings["server"].rstrip("/") + "/api/v1/reports"
    attempts = max(0, settings["retries"]) + 1
    outcome = Outcome("failed")
    credentials = settings.get("credentials")
    for attempt in range(attempts):
        wait = settings["backoff"] * (2**attempt)
        try:
            if credentials is None:
                status, text, retry_after = post(
                    url, settings["token"], body, settings["timeout"], settings["ca_file"]
                )
            else:
                status, text, retry_after = post(
                    url, credentials.token, body, settings["timeout"], settings["ca_file"],
                    credentials.headers(),
                )  # fmt: skip
        except OSError as exc:
            outcome = Outcome("failed", None, f"cannot reach {url}: {exc}")
        else:
            if 200 <= status < 300:
                return Outcome("sent", status, text)
            detail = f"{url} answered HTTP {status}: {clip(text.strip(), 2000)}"
            if status in (408, 429) or status >= 500:
                outcome = Outcome("failed", status, detail)
                if retry_after and retry_after.strip().isdigit():
                    wait = max(wait, min(float(retry_after.strip()), 300.0))
            else:
                return Outcome("rejected", status, detail)
        if attempt + 1 < attempts:
            sleep(min(wait, 300.0) + random.uniform(0, min(wait, 300.0)))
    return outcome


class Spool:
    """Reports waiting to be sent: gzipped bodies in a directory, oldest first, bounded."""

    def __init__(self, directory, keep):
        self.directory = directory
        self.keep = max(1, keep)

    def ensure(self):
        """Create the directory (mode 0700); raise OSError when it is unusable."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise PermissionError(f"{self.directory} is not writable")

    def entries(self):
        """Return the spooled report files, oldest first."""
        return sorted(glob.glob(os.path.join(self.directory, "report-*.json.gz")))

    def add(self, body):
        """Store ``body`` atomically and return its path."""
        self.ensure()
        stamp = f"{int(time.time() * 1000):014d}-{os.getpid()}-{random.randrange(16**6):06x}"
        path = os.path.join(self.directory, f"report-{stamp}.json.gz")
        tmp = os.path.join(self.directory, f".tmp-{stamp}")
        with open(tmp, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    def prune(self):
        """Delete the oldest reports beyond the bound; return how many were dropped."""
        entries = self.entries()
        dropped = entries[: max(0, len(entries) - self.keep)]
        for path in dropped:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return len(dropped)


class Lock:
    """An exclusive flock on the spool directory, so that two runs never send the same file."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def acquire(self, wait, sleep=time.sleep):
        """Return True once the lock is held; False after ``wait`` seconds."""
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.release()
                    return False
                sleep(0.2)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


class Credentials:
    """The host's own token, handed out by the server when the host enrolled.

    The configured token is usually the fleet's enrollment token. The answer to the
    report that enrolls this host carries a token for this host alone; it is kept in
    ``state_dir`` (``.host-token``, mode 0600, with the server and host name it
    belongs to) and used from then on: the enrollment token can no longer write this
    host. Before its first report the agent also keeps an *enrollment key*
    (``.enrollment-key``, 0600), a secret it sends with each report made with the
    configured token: if the answer to its enrollment is lost, sending the report
    again with the same key gets the host a fresh token instead of a refusal.
    """

    TOKEN_FILE = ".host-token"
    KEY_FILE = ".enrollment-key"

    def __init__(self, directory, server, host, configured):
        self.directory = directory
        self.server = server.rstrip("/")
        self.host = host.lower()
        self.configured = configured
        self.token_path = os.path.join(directory, self.TOKEN_FILE)
        self.key_path = os.path.join(directory, self.KEY_FILE)
        self.kept = self._read_kept()
        self.key = ""

    def _read_kept(self):
        try:
            with open(self.token_path, "rb") as handle:
                kept = json.loads(to_text(handle.read()))
        except (OSError, ValueError):
            return ""
        if not isinstance(kept, dict):
            return ""
        token = kept.get("token")
        if (
            kept.get("server") == self.server
            and kept.get("host") == self.host
            and isinstance(token, str)
            and token
            and not any(c in token for c in "\r\n")
        ):
            return token
        return ""

    @property
    def token(self):
        """The token to send: the host's own when kept, else the configured one."""
        return self.kept or self.configured

    def headers(self):
        """Extra request headers: the enrollment key while the host has no token of its own."""
        return {ENROLLMENT_KEY_HEADER: self.key} if self.key and not self.kept else {}

    def prepare(self):
        """Before sending with the configured token: keep an enrollment key (0600).

        Raises OSError when ``state_dir`` cannot be used.
        """
        if self.kept:
            return
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        try:
            with open(self.key_path, "rb") as handle:
                key = to_text(handle.read()).strip()
        except FileNotFoundError:
            key = ""
        if not 32 <= len(key) <= 128:
            key = secrets.token_urlsafe(32)
            write_private(self.key_path, key + "\n")
        self.key = key

    def take(self, answer):
        """Keep the host token in a server's answer, if any; return the path kept in.

        Raises OSError when it cannot be written (the host token is then used for the
        rest of this run only).
        """
        try:
            data = json.loads(answer)
        except ValueError:
            return None
        token = data.get("host_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            return None
        self.kept = token
        record = {"server": self.server, "host": self.host, "token": token}
        write_private(self.token_path, json.dumps(record, sort_keys=True) + "\n")
        return self.token_path


def write_private(path, text):
    """Write ``text`` to ``path`` atomically, readable by the owner only (0600)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w") as handle:
            fd = None
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        if fd is not None:
            os.close(fd)
    os.replace(tmp, path)


# ----------------------------------------------------------------------- settings


def load_config_file(path, required, warn):
    """Return the settings of a ``key = value`` file (an ``[agent]`` header is optional)."""
    try:
        with open(path, "rb") as handle:
            text = to_text(handle.read())
    except FileNotFoundError:
        if required:
            raise UsageError(f"config file {path} not found") from None
        return {}
    except OSError as exc:
        raise UsageError(f"config file {path}: {exc.strerror or exc}") from None
    meaningful = [
        s for s in text.splitlines() if s.strip() and not s.lstrip().startswith(("#", ";"))
    ]
    if not meaningful or not meaningful[0].lstrip().startswith("["):
        text = "[agent]\n" + text
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise UsageError(f"config file {path}: {first_line(str(exc))}") from None
    values = {}
    for section in parser.sections():
        for key, value in parser.items(section):
            if key not in SETTINGS:
                warn(f"{path}: unknown setting {key!r} ignored")
                continue
            values[key] = value.strip()
    if values.get("token"):
        try:
            if os.stat(path).st_mode & 0o004:
                warn(f"{path} holds a token and is world-readable: chmod 600 it")
        except OSError:
            pass
    return values


def convert_setting(key, value):
    """Return ``value`` converted to the type of setting ``key``; raise UsageError."""
    kind = SETTINGS[key][1]
    if kind == "str" or not isinstance(value, str):
        return value
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise UsageError(f"setting {key}: {value!r} is not a number") from None
    flag = parse_bool(value)
    if flag is None:
        raise UsageError(f"setting {key}: {value!r} is not yes/no")
    return flag


def build_settings(opts, environ, warn):
    """Merge defaults, the config file, the environment and the command line (last wins)."""
    path = opts.config or environ.get("PATCHWATCH_CONFIG") or DEFAULT_CONFIG
    explicit = bool(opts.config or environ.get("PATCHWATCH_CONFIG"))
    values = {key: default for key, (default, _kind) in SETTINGS.items()}
    values.update(load_config_file(path, explicit, warn))
    if environ.get("PATCHWATCH_SERVER"):
        values["server"] = environ["PATCHWATCH_SERVER"]
    if environ.get("PATCHWATCH_TOKEN"):
        values["token"] = environ["PATCHWATCH_TOKEN"]
        values["token_file"] = ""
    for key in ("server", "token_file", "hostname", "tags", "spool_dir", "timeout", "retries"):
        value = getattr(opts, key, None)
        if value is not None:
            values[key] = value
            if key == "token_file":
                values["token"] = ""
    if opts.updates:
        values["updates"] = True
    settings = {key: convert_setting(key, value) for key, value in values.items()}
    settings["tags"] = [t for t in re.split(r"[\s,]+", to_text(settings["tags"])) if t]
    for tag in settings["tags"]:
        if len(tag) > 64 or not TAG_PATTERN.match(tag):
            raise UsageError(f"tag {tag!r}: only letters, digits and _.:/- (at most 64)")
    if len(settings["tags"]) > 64:
        raise UsageError("at most 64 tags")
    return settings


def read_token(settings):
    """Return the token (from ``token`` or ``token_file``); raise UsageError when missing."""
    token = settings["token"]
    if not token and settings["token_file"]:
        try:
            with open(settings["token_file"], "rb") as handle:
                token = to_text(handle.read()).strip()
        except OSError as exc:
            path = settings["token_file"]
            if path.startswith("pw_"):  # a token given where its file was meant: not shown
                path = "(a token, not a file name; not shown)"
            raise UsageError(f"token_file {path}: {exc.strerror}") from None
    if not token:
        raise UsageError("no token: set token or token_file in the config, or PATCHWATCH_TOKEN")
    if any(c in token for c in "\r\n"):
        raise UsageError("the token contains a line break")
    return token


def choose_host(settings, ctx):
    """Return the host name to report: configured, the root's /etc/hostname, or the FQDN."""
    host = settings["hostname"]
    if not host and ctx.root != "/":
        text = ctx.read("/etc/hostname")
        host = text.strip() if text else ""
        if not host:
            raise UsageError("--root needs --hostname (the root has no /etc/hostname)")
    if not host:
        host = detect_fqdn()
    host = to_text(host).strip().rstrip(".")
    if len(host) > 253 or not HOST_PATTERN.match(host):
        raise UsageError(f"host name {host!r} is not valid: set hostname in the config")
    return host


# ---------------------------------------------------------------------------- CLI


class ArgumentParser(argparse.ArgumentParser):
    """argparse with exit code 1 (not 2, which means 'spooled') for usage errors.

    Options must be spelled out: with abbreviations, ``--token SECRET`` was taken as
    ``--token-file SECRET`` and the secret printed in the "cannot read" error. Unknown
    arguments are named without their values, which may be secrets.
    """

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def parse_args(self, args=None, namespace=None):
        opts, extras = self.parse_known_args(args, namespace)
        if extras:
            names = [arg.split("=", 1)[0] for arg in extras if arg.startswith("-")]
            self.error(
                "unrecognized arguments: "
                + (" ".join(names) if names else "(values not shown)")
                + (" (values not shown)" if names and len(names) < len(extras) else "")
            )
        return opts


def build_parser():
    parser = ArgumentParser(
        prog=AGENT_NAME,
        description="Collect this host's packages and repositories and send them to patchwatch.",
        epilog="Exit codes: 0 sent, 1 usage/config error, 2 not sent but spooled, "
        "3 rejected by the server. See docs/agent.md.",
    )
    parser.add_argument("--config", help=f"config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--server", help="server base URL, e.g. https://patchwatch.example.org")
    parser.add_argument("--token-file", dest="token_file", help="file holding the token")
    parser.add_argument("--hostname", help="report under this name instead of the FQDN")
    parser.add_argument("--tags", help="comma-separated tags (replace the configured ones)")
    parser.add_argument("--root", default="/", help="collect from this root (chroot, image)")
    parser.add_argument("--spool-dir", dest="spool_dir", help="where unsent reports wait")
    parser.add_argument("--timeout", type=float, help="seconds per HTTP attempt")
    parser.add_argument("--retries", type=int, help="extra attempts after a failure")
    parser.add_argument(
        "--splay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="sleep a random time up to SECONDS first (for cron)",
    )
    flags = (
        ("--updates", "updates", "also report the updates the package manager sees"),
        ("--hook", "hook", "package-manager hook: packages only, debounced, detached"),
        ("--foreground", "foreground", "with --hook: do not detach (debugging)"),
        ("--dry-run", "dry_run", "print the report as JSON and send nothing"),
    )
    for flag, dest, text in flags:
        parser.add_argument(flag, dest=dest, action="store_true", help=text)
    parser.add_argument("-v", "--verbose", action="store_true", help="say what was sent")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


class Output:
    """Messages for the operator: stderr, or syslog once a hook run has detached."""

    def __init__(self, stream=None):
        self.stream = stream
        self.syslog = None

    def say(self, message, level="warning"):
        text = f"{AGENT_NAME}: {level}: {message}" if level else f"{AGENT_NAME}: {message}"
        if self.syslog is not None:
            self.syslog.syslog(self.syslog.LOG_WARNING if level else self.syslog.LOG_INFO, text)
            return
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(text + "\n")
        stream.flush()


def detach(out):
    """Fork into the background (new session, stdio on /dev/null); return False in the parent."""
    if os.fork() > 0:
        return False
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    try:
        import syslog

        syslog.openlog(AGENT_NAME, 0, syslog.LOG_DAEMON)
        out.syslog = syslog
    except ImportError:
        pass
    return True


def debounce(directory, delay, sleep=time.sleep):
    """Return True when no later hook run started within ``delay`` seconds of this one."""
    stamp = os.path.join(directory, "hook.pending")
    mine = f"{os.getpid()} {time.time():.6f} {random.random():.12f}"
    tmp = f"{stamp}.{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(mine)
    os.replace(tmp, stamp)
    sleep(delay)
    try:
        with open(stamp) as handle:
            return handle.read() == mine
    except FileNotFoundError:
        return True


def keep_host_token(settings, outcome, out):
    """After an accepted report: keep the host token its answer carries, if any."""
    credentials = settings.get("credentials")
    if credentials is None or outcome.state != "sent":
        return
    try:
        path = credentials.take(outcome.detail)
    except OSError as exc:
        out.say(
            f"enrolled, but the host's own token could not be kept in {credentials.directory} "
            f"({exc}): it is used for this run only, and the next run will be refused. Fix "
            "state_dir; the next run with the same enrollment key gets a fresh token",
            "error",
        )
        return
    if path:
        out.say(f"enrolled: this host's own token is kept in {path} (mode 0600)", "")


def tell_previous_failure(outcome, out):
    """After an accepted report: say so when the server could not process this host's
    report before it (the server stores a report before reading it whole, so a report
    it cannot read is refused only then, and said in the answer to the next one)."""
    if outcome.state != "sent":
        return
    try:
        answer = json.loads(outcome.detail)
    except ValueError:
        return
    previous = answer.get("previous_report") if isinstance(answer, dict) else None
    if isinstance(previous, dict) and previous.get("state") == "failed":
        out.say(
            f"the server could not process this host's previous report "
            f"({previous.get('id')}): {clip(str(previous.get('error', '')), 2000)}",
            "error",
        )


def refused_host_token(settings, outcome, out):
    """Say what to do when the kept host token itself is refused (revoked, expired)."""
    credentials = settings.get("credentials")
    if credentials is not None and credentials.kept and outcome.status == 401:
        out.say(
            f"the host token kept in {credentials.token_path} was refused: an operator "
            f"revoked it; ask for 'patchwatch token release {credentials.host}' (then delete "
            "that file to enroll again) or a new host token",
            "error",
        )


def send_all(settings, body, out, sleep=time.sleep, post=post_report):
    """Send spooled reports (oldest first) and then ``body``; return the exit code."""
    spool = Spool(settings["spool_dir"], settings["spool_max"])
    try:
        spool.ensure()
        spool_ok = True
    except OSError as exc:
        out.say(f"spool_dir {spool.directory} unusable ({exc}): a failed send would be lost")
        spool_ok = False
    lock = Lock(os.path.join(spool.directory, ".lock")) if spool_ok else None
    if lock is not None and not lock.acquire(120.0, sleep):
        spool.add(body)
        out.say("another patchwatch-agent run holds the spool lock: report spooled")
        return EXIT_SPOOLED
    try:
        rejected = False
        reachable = True
        for path in spool.entries() if spool_ok else []:
            try:
                with open(path, "rb") as handle:
                    old = handle.read()
            except FileNotFoundError:
                continue
            outcome = deliver(settings, old, sleep, post)
            if outcome.state == "failed":
                reachable = False
                out.say(outcome.detail)
                break
            keep_host_token(settings, outcome, out)
            tell_previous_failure(outcome, out)
            os.unlink(path)  # accepted (2xx) or refused for good: never send it again
            if outcome.state == "rejected":
                rejected = True
                out.say(f"spooled report {os.path.basename(path)} rejected: {outcome.detail}")
        if reachable:
            outcome = deliver(settings, body, sleep, post)
            if outcome.state == "sent":
                keep_host_token(settings, outcome, out)
                tell_previous_failure(outcome, out)
                return EXIT_REJECTED if rejected else EXIT_OK
            if outcome.state == "rejected":
                out.say(f"report rejected: {outcome.detail}", "error")
                refused_host_token(settings, outcome, out)
                return EXIT_REJECTED
            out.say(outcome.detail)
        if not spool_ok:
            out.say("report could not be sent nor spooled", "error")
            return EXIT_USAGE
        try:
            spool.add(body)
        except OSError as exc:
            out.say(f"report could not be sent nor spooled: {exc}", "error")
            return EXIT_USAGE
        dropped = spool.prune()
        if dropped:
            out.say(f"spool full: dropped the {dropped} oldest unsent report(s)")
        out.say(f"report spooled in {spool.directory}; it is sent first on the next run")
        return EXIT_REJECTED if rejected else EXIT_SPOOLED
    finally:
        if lock is not None:
            lock.release()


def run(argv, environ=None, runner=None, sleep=time.sleep, stdout=None, stderr=None, post=None):
    """Run the agent with command-line ``argv``; return the exit code.

    ``runner``, ``sleep``, ``post`` and the streams are injectable for tests; by default
    the real commands, clock, network and stdio are used.
    """
    environ = os.environ if environ is None else environ
    stdout = stdout if stdout is not None else sys.stdout
    out = Output(stderr)
    try:
        opts = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        settings = build_settings(opts, environ, out.say)
        ctx = Context(opts.root, runner)
        if not os.path.isdir(ctx.root):
            raise UsageError(f"--root {opts.root}: not a directory")
        host = choose_host(settings, ctx)
        token = ""
        credentials = None
        if not opts.dry_run:
            if not re.match(r"^https?://[^/\s]+", settings["server"]):
                raise UsageError("no server URL (http:// or https://): set server in the config")
            state_dir = settings["state_dir"] or settings["spool_dir"]
            credentials = Credentials(state_dir, settings["server"], host, "")
            if not credentials.kept:  # the configured token is needed only until then
                credentials.configured = read_token(settings)
            token = credentials.token
    except UsageError as exc:
        out.say(str(exc), "error")
        return EXIT_USAGE
    settings["token"] = token
    settings["credentials"] = credentials
    if credentials is not None:
        try:
            credentials.prepare()
        except OSError as exc:
            out.say(f"state_dir {credentials.directory} unusable ({exc}): if this run enrolls "
                    "the host, its own token cannot be kept")  # fmt: skip
    if opts.hook and not opts.dry_run:
        if not opts.foreground and not detach(out):
            return EXIT_OK
        try:
            Spool(settings["spool_dir"], settings["spool_max"]).ensure()
            if not debounce(settings["spool_dir"], settings["hook_delay"], sleep):
                return EXIT_OK  # a later hook run will report
        except OSError as exc:
            out.say(f"hook debounce skipped: {exc}")
    elif opts.splay > 0:
        sleep(random.uniform(0, opts.splay))
    started = time.monotonic()
    report = collect_report(ctx, host, settings["tags"], opts.hook, settings["updates"])
    elapsed = time.monotonic() - started
    for warning in ctx.warnings:
        out.say(warning)
    if opts.dry_run:
        text = json.dumps(report, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        buffer = getattr(stdout, "buffer", None)
        if buffer is not None:
            stdout.flush()
            buffer.write(text.encode("utf-8"))
            buffer.flush()
        else:
            stdout.write(text)
        return EXIT_OK
    body = encode_report(report)
    if opts.verbose:
        out.say(
            f"collected {len(report['packages'])} packages, "
            f"{len(report.get('repositories', []))} repositories in {elapsed:.2f} s; "
            f"{len(body)} bytes gzipped",
            "",
        )
    code = send_all(settings, body, out, sleep, post or post_report)
    if opts.verbose and code == EXIT_OK:
        out.say(f"report accepted by {settings['server']}", "")
    return code


def main(argv=None):
    """Console-script entry point."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
