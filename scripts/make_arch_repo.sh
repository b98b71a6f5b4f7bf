#!/bin/bash
# make_arch_repo.sh OUTDIR
#
# Builds a small, real, fully offline pacman (Arch Linux) repository into OUTDIR with
# pacman's own makepkg and repo-add, as Debian ships them. patchwatch's pacman database
# parser tests read what repo-add wrote. Contents (pkgbase in brackets when it differs):
#
#   hello            1.0-1                  any      older build, kept in OUTDIR/old/
#   hello            1.1-1                  any
#   widget           2:3.0-2                any      epoch 2
#   legacy           1:0.8-1                any      epoch 1 beats a higher pkgver
#   libdemo          1.0-2.1                x86_64   pkgrel with a minor part
#   toolkit-common   2.0rc1-1 [toolkit]     any      split package: two packages, one pkgbase
#   toolkit-cli      2.0rc1-1 [toolkit]     x86_64
#   gadget           1.0.r12.gabc1234-3     any      a VCS-style pkgver
#   mover            1.1-1                  any      was x86_64 (moved to any)
#   shifter          2.1-1                  x86_64   was any (moved to x86_64)
#
# and, in OUTDIR/old/ only (never in the databases), builds for a host to have
# installed: widget 1:3.0-2 (an older epoch), legacy 0.9-1 (no epoch: older than
# 1:0.8), gadget 1.0.r9.g1111111-3 (an older snapshot), libdemo 1.1-1 (newer than
# the repository's 1.0-2.1: no update), localonly 1.0-1 (in no repository), and
# mover 1.0-1 x86_64 and shifter 2.0-1 any, whose newer builds changed architecture
# (pacman matches by name alone: both are upgrades).
#
# The committed fixtures (tests/fixtures/arch/pwtest*.db.tar.*) are an earlier run,
# before mover and shifter; the oracle test builds its own.
#
# Into OUTDIR: the packages (*.pkg.tar.zst), the databases pwtest.db.tar.gz (repo-add's
# default, with the pwtest.db link) and pwtest-zst.db.tar.zst (the same packages, zstd,
# as Arch's own mirrors now publish), their .files companions, and old/ with the
# superseded build. makepkg refuses to run as root, so as root the builds run as
# `nobody` (runuser); as any other user they run as that user.
#
# Needs the Debian packages makepkg (makepkg, repo-add), libarchive-tools (bsdtar, which
# both use), fakeroot and zstd:
#   apt-get install -y makepkg libarchive-tools fakeroot zstd
# Exit status 2 when a tool is missing (tests turn that into a skip, or a failure in CI).
set -euo pipefail

usage() { echo "usage: $0 OUTDIR" >&2; exit 64; }

out=${1:-}
[ -n "$out" ] && [ $# -eq 1 ] || usage

. "$(dirname "$0")/repo_build_lib.sh"
require_tools "apt-get install -y makepkg libarchive-tools fakeroot zstd" \
  makepkg repo-add bsdtar fakeroot zstd
start_build pw-archtop
chmod 755 "$top"

# makepkg reads its settings from a file we control, not the machine's /etc/makepkg.conf
# and not the caller's ~/.makepkg.conf.
cat > "$top/makepkg.conf" <<'CONF'
CARCH="x86_64"
CHOST="x86_64-pc-linux-gnu"
BUILDENV=(!distcc !color !ccache !check !sign)
OPTIONS=(!strip !docs !libtool !staticlibs emptydirs !zipman !purge !debug !lto)
INTEGRITY_CHECK=(sha256)
PACKAGER="patchwatch fixture <fixture@patchwatch.invalid>"
COMPRESSZST=(zstd -c -z -q -)
PKGEXT='.pkg.tar.zst'
SRCEXT='.src.tar.gz'
CONF

as_builder() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u nobody -- "$@"
  else
    "$@"
  fi
}

pkgbuild() {  # dir, then the PKGBUILD text on stdin
  mkdir -p "$top/$1"
  cat > "$top/$1/PKGBUILD"
}

build() {  # dir
  local dir=$top/$1
  mkdir -p "$top/pkgs"
  chmod -R a+rwX "$top"
  (cd "$dir" && as_builder env HOME="$top" PKGDEST="$top/pkgs" SRCDEST="$dir" \
     BUILDDIR="$dir/build" MAKEPKG_CONF="$top/makepkg.conf" \
     makepkg --config "$top/makepkg.conf" --nodeps --noconfirm --noprogressbar >"$dir/log" 2>&1) \
    || { cat "$dir/log" >&2; exit 1; }
}

simple() {  # name epoch pkgver pkgrel arch desc
  local epoch_line=""
  [ -n "$2" ] && epoch_line="epoch=$2"
  pkgbuild "$1-${2:-0}-$3-$4" <<EOF
pkgname=$1
$epoch_line
pkgver=$3
pkgrel=$4
pkgdesc="$6 (patchwatch test fixture)"
arch=($5)
url="https://patchwatch.invalid/$1"
license=(MIT)
package() {
  mkdir -p "\$pkgdir/usr/share/$1"
  echo "${2:+$2:}$3-$4" > "\$pkgdir/usr/share/$1/VERSION"
}
EOF
  build "$1-${2:-0}-$3-$4"
}

simple hello   ""  1.0               1    any    "Hello test package"
simple hello   ""  1.1               1    any    "Hello test package"
simple widget  2   3.0               2    any    "Widget test package with an epoch"
simple legacy  1   0.8               1    any    "Epoch beats version"
simple libdemo ""  1.0               2.1  x86_64 "Arch-specific test library"
simple gadget  ""  1.0.r12.gabc1234  3    any    "VCS snapshot package"
simple mover   ""  1.1               1    any    "Moved from x86_64 to any"
simple shifter ""  2.1               1    x86_64 "Moved from any to x86_64"
# installed-only builds, kept out of the databases (see the top of this file)
simple widget    1  3.0               2    any    "Widget test package with an epoch"
simple legacy    "" 0.9               1    any    "Epoch beats version"
simple gadget    "" 1.0.r9.g1111111   3    any    "VCS snapshot package"
simple libdemo   "" 1.1               1    x86_64 "Arch-specific test library"
simple localonly "" 1.0               1    any    "Built here, in no repository"
simple mover     "" 1.0               1    x86_64 "Moved from x86_64 to any"
simple shifter   "" 2.0               1    any    "Moved from any to x86_64"

pkgbuild toolkit <<'EOF'
pkgbase=toolkit
pkgname=(toolkit-common toolkit-cli)
pkgver=2.0rc1
pkgrel=1
pkgdesc="Split test package (patchwatch test fixture)"
arch=(x86_64)
url="https://patchwatch.invalid/toolkit"
license=(MIT)
package_toolkit-common() {
  arch=(any)
  mkdir -p "$pkgdir/usr/share/toolkit"
  echo common > "$pkgdir/usr/share/toolkit/PART"
}
package_toolkit-cli() {
  arch=(x86_64)
  depends=(toolkit-common)
  mkdir -p "$pkgdir/usr/bin"
  printf '#!/bin/sh\necho toolkit\n' > "$pkgdir/usr/bin/toolkit"
  chmod 755 "$pkgdir/usr/bin/toolkit"
}
EOF
build toolkit

rm -rf "$out"/*.pkg.tar.zst "$out"/pwtest* "$out/old"
mkdir -p "$out/old"
cp "$top"/pkgs/*.pkg.tar.zst "$out/"
for old in hello-1.0-1-any widget-1:3.0-2-any legacy-0.9-1-any gadget-1.0.r9.g1111111-3-any \
           libdemo-1.1-1-x86_64 localonly-1.0-1-any mover-1.0-1-x86_64 shifter-2.0-1-any; do
  mv "$out/$old.pkg.tar.zst" "$out/old/"
done
cd "$out"
# -q: no progress lines; repo-add keeps one version per package name, the one it is given
repo-add -q pwtest.db.tar.gz ./*.pkg.tar.zst
repo-add -q pwtest-zst.db.tar.zst ./*.pkg.tar.zst
