# Sourced by the fixture repository builders (make_arch_repo.sh, make_rpm_repo.sh): the
# steps they both begin with. Not run on its own.

# require_tools HINT TOOL...: exit 2 (tests turn it into a skip, CI into a failure) naming
# the first missing tool and HINT, how to install them.
require_tools() {
  local hint=$1 tool
  shift
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null; then
      echo "missing $tool ($hint)" >&2
      exit 2
    fi
  done
}

# start_build PREFIX: create $out and make it absolute, make $top a fresh temporary folder
# (named PREFIX.XXXXXX, removed on exit), and fix build times (SOURCE_DATE_EPOCH, unless
# the caller set it) so that builds are reproducible.
start_build() {
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  top=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  trap 'rm -rf "$top"' EXIT
  export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1767225600}   # 2026-01-01T00:00:00Z
}
