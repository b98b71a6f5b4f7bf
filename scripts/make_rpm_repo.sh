#!/bin/bash
# make_rpm_repo.sh OUTDIR [--compress gz|xz|bz2] [--no-database] [--release-package]
#
# Builds a small, real, fully offline rpm-md (yum/dnf/zypper) repository into OUTDIR with
# rpmbuild, createrepo_c and modifyrepo_c. patchwatch's rpm-md parser tests read it, and
# the update computation is checked against dnf on it. Contents:
#
#   hello    1.0-1                 noarch
#   hello    1.1-1                 noarch   security update   PWTEST-2026:0001 (2 CVEs)
#   widget   2:3.0-1.el9           noarch   epoch 2
#   widget   2:3.0-2.el9           noarch   bugfix update     PWTEST-2026:0002
#   legacy   1:0.8-1               noarch   epoch 1 beats the higher version below
#   legacy   0.9-1                 noarch
#   libdemo  1.0-1                 x86_64   an arch-specific package
#   libdemo  1.0-2                 x86_64   enhancement       PWTEST-2026:0003
#   gadget   1.0-1.module_pw1      noarch   in module gadget:1 (modules.yaml, default stream)
#   gadget   1.1-1.module_pw1      noarch   in module gadget:1
#   pwtest-release 9.4-1           noarch   only with --release-package: provides
#                                           system-release(releasever) = 9 as rocky-release
#                                           does; dnf and the agent take $releasever from it
#
# Package payloads and primary/filelists/other are byte-reproducible (SOURCE_DATE_EPOCH,
# clamped mtimes, fixed build host); repomd timestamps of modifyrepo_c entries are not.
#
# Needs the Debian packages rpm (rpmbuild) and createrepo-c (createrepo_c, modifyrepo_c):
#   apt-get install -y rpm createrepo-c
# Exit status 2 when a tool is missing (tests turn that into a skip, or a failure in CI).
set -euo pipefail

usage() { echo "usage: $0 OUTDIR [--compress gz|xz|bz2] [--no-database] [--release-package]" >&2; exit 64; }

out=${1:-}
[ -n "$out" ] || usage
shift
compress=gz
database=--database
release_package=no
while [ $# -gt 0 ]; do
  case $1 in
    --compress) compress=${2:-}; shift 2 || usage ;;
    --no-database) database=--no-database; shift ;;
    --release-package) release_package=yes; shift ;;
    *) usage ;;
  esac
done
case $compress in gz|xz|bz2) ;; *) echo "unsupported --compress $compress (gz, xz, bz2)" >&2; exit 64 ;; esac

. "$(dirname "$0")/repo_build_lib.sh"
require_tools "apt-get install -y rpm createrepo-c" rpmbuild createrepo_c modifyrepo_c
start_build pw-rpmtop
mkdir -p "$top"/{SPECS,SOURCES,BUILD,RPMS,SRPMS,BUILDROOT}
export HOME=$top   # keep the caller's ~/.rpmmacros out of the build

build() {  # name epoch-or-empty version release arch summary [provides]
  local name=$1 epoch=$2 version=$3 release=$4 arch=$5 summary=$6 provides=${7:-}
  local spec="$top/SPECS/$name-$version-$release.spec"
  {
    echo "Name: $name"
    [ -n "$epoch" ] && echo "Epoch: $epoch"
    echo "Version: $version"
    echo "Release: $release"
    [ -n "$provides" ] && echo "Provides: $provides"
    echo "Summary: $summary"
    echo "License: MIT"
    [ "$arch" = noarch ] && echo "BuildArch: noarch"
    echo
    echo "%description"
    echo "$summary (patchwatch test fixture)."
    echo
    echo "%install"
    echo "mkdir -p %{buildroot}/usr/share/$name"
    echo "echo '${epoch:+$epoch:}$version-$release' > %{buildroot}/usr/share/$name/VERSION"
    echo
    echo "%files"
    echo "/usr/share/$name/VERSION"
  } > "$spec"
  local target=()
  [ "$arch" != noarch ] && target=(--target "$arch")
  rpmbuild --quiet -bb "${target[@]}" \
    --define "_topdir $top" \
    --define "_buildhost fixture.invalid" \
    --define "use_source_date_epoch_as_buildtime 1" \
    --define "clamp_mtime_to_source_date_epoch 1" \
    --define "_binary_payload w9.gzdio" \
    --define "debug_package %{nil}" \
    "$spec" >/dev/null   # it prints "Building target platforms" even with --quiet
}

build hello   ""  1.0 1              noarch "Hello test package"
build hello   ""  1.1 1              noarch "Hello test package"
build widget  2   3.0 1.el9          noarch "Widget test package with an epoch"
build widget  2   3.0 2.el9          noarch "Widget test package with an epoch"
build legacy  1   0.8 1              noarch "Epoch beats version"
build legacy  ""  0.9 1              noarch "Epoch beats version"
build libdemo ""  1.0 1              x86_64 "Arch-specific test library"
build libdemo ""  1.0 2              x86_64 "Arch-specific test library"
build gadget  ""  1.0 1.module_pw1   noarch "Modular test package"
build gadget  ""  1.1 1.module_pw1   noarch "Modular test package"
if [ "$release_package" = yes ]; then
  build pwtest-release "" 9.4 1 noarch "Release package" \
    "system-release, system-release(releasever) = 9"
fi

rm -rf "$out/Packages" "$out/repodata"
mkdir -p "$out/Packages"
cp "$top"/RPMS/*/*.rpm "$out/Packages/"
touch -d "@$SOURCE_DATE_EPOCH" "$out"/Packages/*.rpm   # primary.xml records file mtimes
createrepo_c --quiet "$database" --general-compress-type "$compress" --compress-type "$compress" \
  --revision "$SOURCE_DATE_EPOCH" --set-timestamp-to-revision "$out"

cat > "$top/updateinfo.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="fixture@patchwatch.invalid" status="final" type="security" version="2.0">
    <id>PWTEST-2026:0001</id>
    <title>Important: hello security update</title>
    <severity>Important</severity>
    <release>Patchwatch Fixture 1</release>
    <issued date="2026-01-01 00:00:00"/>
    <updated date="2026-01-02 00:00:00"/>
    <references>
      <reference href="https://bugzilla.example.invalid/show_bug.cgi?id=1001" id="1001" type="bugzilla" title="hello: remote code execution"/>
      <reference href="https://cve.example.invalid/CVE-2026-0001" id="CVE-2026-0001" type="cve" title="CVE-2026-0001"/>
      <reference href="https://cve.example.invalid/CVE-2026-0002" id="CVE-2026-0002" type="cve" title="CVE-2026-0002"/>
      <reference href="https://errata.example.invalid/PWTEST-2026:0001" id="PWTEST-2026:0001" type="self" title="PWTEST-2026:0001"/>
    </references>
    <description>Fixes a (fictional) remote code execution in hello.</description>
    <pkglist>
      <collection short="fixture">
        <name>Patchwatch Fixture</name>
        <package name="hello" version="1.1" release="1" epoch="0" arch="noarch" src="hello-1.1-1.src.rpm">
          <filename>hello-1.1-1.noarch.rpm</filename>
          <sum type="sha256">0000000000000000000000000000000000000000000000000000000000000000</sum>
        </package>
      </collection>
    </pkglist>
  </update>
  <update from="fixture@patchwatch.invalid" status="final" type="bugfix" version="2.0">
    <id>PWTEST-2026:0002</id>
    <title>widget bug fix update</title>
    <severity>None</severity>
    <release>Patchwatch Fixture 1</release>
    <issued date="2026-01-03 00:00:00"/>
    <description>Fixes a (fictional) crash in widget.</description>
    <pkglist>
      <collection short="fixture">
        <name>Patchwatch Fixture</name>
        <package name="widget" version="3.0" release="2.el9" epoch="2" arch="noarch" src="widget-3.0-2.el9.src.rpm">
          <filename>widget-3.0-2.el9.noarch.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
  <update from="fixture@patchwatch.invalid" status="final" type="enhancement" version="2.0">
    <id>PWTEST-2026:0003</id>
    <title>libdemo enhancement update</title>
    <release>Patchwatch Fixture 1</release>
    <issued date="2026-01-04 00:00:00"/>
    <description>Adds a (fictional) feature to libdemo.</description>
    <pkglist>
      <collection short="fixture">
        <name>Patchwatch Fixture</name>
        <package name="libdemo" version="1.0" release="2" epoch="0" arch="x86_64" src="libdemo-1.0-2.src.rpm">
          <filename>libdemo-1.0-2.x86_64.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
</updates>
XML
modifyrepo_c --compress-type "$compress" "$top/updateinfo.xml" "$out/repodata" >/dev/null

cat > "$top/modules.yaml" <<'YAML'
---
document: modulemd
version: 2
data:
  name: gadget
  stream: "1"
  version: 20260101000000
  context: c0ffee42
  arch: noarch
  summary: Gadget test module
  description: >-
    A module stream holding the gadget test package (patchwatch fixture).
  license:
    module:
    - MIT
    content:
    - MIT
  profiles:
    common:
      rpms:
      - gadget
  artifacts:
    rpms:
    - gadget-0:1.0-1.module_pw1.noarch
    - gadget-0:1.1-1.module_pw1.noarch
...
---
document: modulemd-defaults
version: 1
data:
  module: gadget
  stream: "1"
  profiles:
    "1": [common]
...
YAML
modifyrepo_c --compress-type "$compress" --mdtype modules "$top/modules.yaml" "$out/repodata" >/dev/null

echo "rpm-md repository built in $out ($compress):"
ls -1 "$out/Packages" "$out/repodata"
