"""The agent reports each binary's source package; matching prefers it to a mirror's word.

Debian's and Ubuntu's vulnerability records name source packages (libc6 is glibc's)
and a binNMU's version (``+b2``) is not its source's. The agent asks dpkg-query for
``${source:Package}``/``${source:Version}`` (rpm: ``SOURCERPM``); processing stores them;
matching uses them before the mirror index's ``Source:`` field (Patchman clients' only
source).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from patchwatch.agent import patchwatch_agent as agent
from patchwatch.domain.reports.native import parse_native
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.hostvulns import refresh_host_vulns
from patchwatch.pipeline.processing import NATIVE
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.pipeline.vulnfeeds import refresh_vulns
from patchwatch.store.models import Host
from patchwatch.store.models import Package
from patchwatch.store.vuln_models import VulnHost
from patchwatch.store.vulns import findings
from patchwatch.store.vulns import record_names
from patchwatch.store.vulns import remember_sources
from patchwatch.store.vulns import set_finding_ids
from tests.support.paths import ROOT
from tests.support.tools import ORACLES_ENV
from tests.support.tools import require_or_skip
from tests.support.tools import require_tool

SCHEMA = json.loads((ROOT / "patchwatch" / "domain" / "schemas" / "report-v1.json").read_text())
FIXTURES = ROOT / "tests" / "fixtures" / "vulns"
STATUS = Path("/var/lib/dpkg/status")


def dpkg_status_sources() -> dict[tuple[str, str], tuple[str, str, str]]:
    """(name, arch) -> (version, source, source version) of installed packages, read from
    dpkg's status file by hand: the oracle, independent of dpkg-query and the agent."""
    out = {}
    for stanza in STATUS.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields = dict(
            re.match(r"^([A-Za-z0-9-]+):\s?(.*)$", line).groups()  # type: ignore[union-attr]
            for line in stanza.splitlines()
            if line and not line[0].isspace() and re.match(r"^[A-Za-z0-9-]+:", line)
        )
        if not fields.get("Status", "").endswith(" installed"):
            continue
        version = fields["Version"]
        source, _, rest = fields.get("Source", fields["Package"]).partition(" ")
        source_version = rest.strip("()") if rest else version
        out[(fields["Package"], fields["Architecture"])] = (version, source, source_version)
    return out


def test_agent_reports_this_hosts_sources_as_dpkg_status_says() -> None:
    require_tool("dpkg-query")
    if not STATUS.exists():
        require_or_skip(ORACLES_ENV, f"this machine has no dpkg status file ({STATUS})")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "agent" / "patchwatch_agent.py"), "--dry-run",
         "--hostname", "sources.example.net"],
        capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    expected = dpkg_status_sources()
    reported = {(s["name"], s["arch"]): s for s in report["sources"]}
    differing = 0
    for p in (p for p in report["packages"] if p["type"] == "deb"):
        full = (f"{p['epoch']}:" if p["epoch"] else "") + p["version"]
        full += f"-{p['release']}" if p["release"] else ""
        version, source, source_version = expected[(p["name"], p["arch"])]
        assert full == version
        entry = reported.get((p["name"], p["arch"]))
        if source == p["name"] and source_version == version:
            assert entry is None, entry  # sent only where the source differs
            continue
        differing += 1
        assert entry is not None, p
        assert entry["source"] == source
        assert entry.get("source_version", version) == source_version
    assert differing == len(reported) > 0
    assert reported[("libc6", "amd64")]["source"] == "glibc"

    parsed = parse_native(report)
    assert len(parsed.sources) == len(report["sources"])


def test_old_four_field_dpkg_and_rpm_lines_still_read() -> None:
    warnings: list[str] = []
    sources: list[dict] = []
    text = "ii \tlibc6\t2.36-9+deb12u1\tamd64\nii \tbash\t5.2.15-2+b2\tamd64\tbash\t5.2.15-2\n"
    packages = agent.parse_dpkg_query(text, warnings.append, [], sources)
    assert [p["name"] for p in packages] == ["libc6", "bash"] and not warnings
    assert sources == [
        {"name": "bash", "version": "5.2.15", "release": "2+b2", "arch": "amd64",
         "source": "bash", "source_version": "5.2.15-2"}
    ]  # fmt: skip

    rpm = ("glibc-common\t(none)\t2.34\t60.el9\tx86_64\tglibc-2.34-60.el9.src.rpm\n"
           "bash\t(none)\t5.1.8\t9.el9\tx86_64\tbash-5.1.8-9.el9.src.rpm\n"
           "gpg-pubkey\t(none)\t350d275d\t6279464b\t(none)\t(none)\n"
           "tzdata\t(none)\t2024a\t1.el9\tnoarch\n")  # fmt: skip
    sources = []
    packages = agent.parse_rpm_query(rpm, warnings.append, sources)
    assert [p["name"] for p in packages] == ["glibc-common", "bash", "tzdata"] and not warnings
    assert sources == [{"name": "glibc-common", "version": "2.34", "release": "60.el9",
                        "arch": "x86_64", "source": "glibc"}]  # fmt: skip
    assert agent.split_source_rpm("kernel-5.14.0-362.8.1.el9_3.src.rpm") == (
        "kernel", "5.14.0-362.8.1.el9_3")  # fmt: skip
    assert agent.split_source_rpm("(none)") == ("", "")
    assert agent.split_source_rpm("noversion.src.rpm") == ("", "")


def _doc(host: str, sources: list[dict]) -> dict:
    return {
        "version": 1, "host": host,
        "os": {"id": "debian", "version_id": "12", "version_codename": "bookworm",
               "name": "Debian GNU/Linux"},
        "kernel": "6.1.0-28-amd64", "arch": "x86_64",
        "packages": [
            {"name": "libc6", "epoch": "", "version": "2.36", "release": "9+deb12u1",
             "arch": "amd64", "type": "deb"},
            {"name": "libc-bin", "epoch": "", "version": "2.36", "release": "9+deb12u1+b1",
             "arch": "amd64", "type": "deb"},
        ],
        "sources": sources,
    }  # fmt: skip


def _glibc_findings(host: str) -> set[tuple[str, str, str]]:
    link = VulnHost.get(VulnHost.host == Host.get(Host.name == host).id)
    rows = findings(set_finding_ids([link.vuln_set_id]).get(link.vuln_set_id, [])).values()
    return {(r.package, r.installed, r.vulnerability) for r in rows}


def test_processing_stores_reported_sources_and_matching_prefers_them(db, tmp_path) -> None:
    libc6 = {"name": "libc6", "version": "2.36", "release": "9+deb12u1", "arch": "amd64",
             "source": "glibc"}  # fmt: skip
    # a binNMU: the agent says its source version, which drops more than "+b1" would
    libc_bin = {"name": "libc-bin", "version": "2.36", "release": "9+deb12u1+b1",
                "arch": "amd64", "source": "glibc", "source_version": "2.36-9+deb12u1"}  # fmt: skip
    store_report("agent1.example", NATIVE, _doc("agent1.example", [libc6, libc_bin]), 100.0)
    store_report("plain1.example", NATIVE, _doc("plain1.example", []), 100.0)
    process_pending(100.0)

    ids = {p.name: p.id for p in Package.select().where(Package.name.in_(["libc6", "libc-bin"]))}
    assert record_names(ids.values()) == {ids["libc6"]: ("glibc", "2.36-9+deb12u1"),
                                          ids["libc-bin"]: ("glibc", "2.36-9+deb12u1")}  # fmt: skip
    # a mirror's index never writes over what a host reported
    from patchwatch.domain.records import Package as Record
    from patchwatch.domain.records import PackageKind

    rec = Record("libc6", "", "2.36", "9+deb12u1", "amd64", PackageKind.DEB)
    assert remember_sources({rec: "glibc-from-a-mirror"}) == 0
    assert record_names([ids["libc6"]])[ids["libc6"]] == ("glibc", "2.36-9+deb12u1")

    settings = Settings(data_dir=str(tmp_path), vulns_enabled=True,
                        vulns_osv_sources=(str(FIXTURES / "debian"),),
                        vulns_debian_tracker_source="", vulns_kev_source="",
                        vulns_epss_source="")  # fmt: skip
    refresh_vulns(settings)
    refresh_host_vulns(1000.0)
    found = _glibc_findings("agent1.example")
    assert ("glibc", "2.36-9+deb12u1", "CVE-2023-4911") in found
    assert {installed for name, installed, _v in found} == {"2.36-9+deb12u1"}
    # the same packages without sources: the same set (package sets are shared), so
    # what one host's agent said serves every host with these packages
    assert _glibc_findings("plain1.example") == found


def test_bad_sources_are_refused_with_their_path() -> None:
    from patchwatch.domain.errors import ParseError

    bad = _doc("bad.example", [{"name": "libc6", "version": "2.36", "arch": "amd64"}])
    with pytest.raises(ParseError) as err:
        parse_native(bad)
    assert "sources[0]" in str(err.value)
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(bad)
    long = _doc("bad.example", [{"name": "libc6", "version": "2.36", "arch": "amd64",
                                 "source": "x" * 257}])  # fmt: skip
    with pytest.raises(ParseError):
        parse_native(long)
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(long)
