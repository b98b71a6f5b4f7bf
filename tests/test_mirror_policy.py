"""The fetch policy as pure rules: URL patterns, addresses, and where a mirror may lead."""

from __future__ import annotations

import ipaddress
from urllib.parse import urljoin

import hypothesis
import pytest
import requests
import urllib3
from hypothesis import strategies as st

from patchwatch.domain.errors import ConfigError
from patchwatch.domain.mirror_policy import DEFAULT_MIRROR_URL_PATTERNS
from patchwatch.domain.mirror_policy import MirrorPolicy
from patchwatch.domain.mirror_policy import address_kind
from patchwatch.domain.mirror_policy import parse_pattern
from patchwatch.domain.settings import Settings
from patchwatch.domain.settings import parse_settings

DEFAULT = MirrorPolicy.build(DEFAULT_MIRROR_URL_PATTERNS, [])


@pytest.mark.parametrize(
    ("url", "covered"),
    [
        ("http://deb.debian.org/debian", True),
        ("https://security.debian.org/debian-security", True),
        ("http://DEB.Debian.ORG./debian", True),  # case and a trailing dot do not matter
        ("http://debian.org/", True),  # *.domain covers the domain itself
        ("http://archive.ubuntu.com/ubuntu", True),
        ("https://mirrors.fedoraproject.org/metalink?repo=epel-9&arch=x86_64", True),
        ("https://mirrors.rockylinux.org/mirrorlist?arch=x86_64&repo=BaseOS-9", True),
        ("http://deb.debian.org:8080/debian", False),  # not the scheme's default port
        ("http://evildebian.org/debian", False),
        ("http://deb.debian.org.evil.example/debian", False),
        ("http://deb.debian.org@evil.example/debian", False),  # the host is evil.example
        ("ftp://deb.debian.org/debian", False),
        ("file:///etc/passwd", False),
        ("http://10.0.0.1/debian", False),
        ("not a url", False),
    ],
)
def test_default_patterns_cover_the_distributions_mirror_networks(url: str, covered: bool) -> None:
    assert DEFAULT.matches(url) is covered


def test_pattern_scheme_port_and_path() -> None:
    internal = parse_pattern("https://mirror.internal.example/debian/")
    assert internal.matches("https://mirror.internal.example/debian")
    assert internal.matches("https://mirror.internal.example/debian/dists/bookworm/InRelease")
    assert not internal.matches("http://mirror.internal.example/debian")  # https only
    assert not internal.matches("https://mirror.internal.example/debian-evil/")  # segments
    assert not internal.matches("https://mirror.internal.example/debian/../private/")
    assert not internal.matches("https://mirror.internal.example:8443/debian")
    any_port = parse_pattern("127.0.0.1:*")
    assert any_port.matches("http://127.0.0.1:40123/x") and any_port.matches("https://127.0.0.1/")
    assert parse_pattern("[::1]:8080").matches("http://[::1]:8080/repo")
    assert parse_pattern("mirror.example:8080").matches("http://mirror.example:8080/")
    assert not parse_pattern("mirror.example:8080").matches("http://mirror.example/")


@pytest.mark.parametrize(
    "bad", ["", "ftp://mirror.example", "*", "*.*.example", "mirror.example:x",
            "mirror.example:70000", "user@mirror.example", "mirror.example/?q", "[::1"],
)  # fmt: skip
def test_bad_patterns_are_refused_with_the_reason(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_pattern(bad)


@pytest.mark.parametrize("address", ["203.0.113.80", "198.51.100.7", "192.0.2.1", "2001:db8::1"])
def test_documentation_addresses_are_not_refused(address: str) -> None:
    """No internal service lives in the documentation prefixes, so reaching one exposes
    nothing; sandboxes and test networks put mirror caches there."""
    assert DEFAULT.address_refusal(address) is None


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.5.4", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback (127.0.0.1 embedded)"),
        ("::ffff:169.254.169.254", "link-local (169.254.169.254 embedded)"),
        ("64:ff9b::a00:1", "private (10.0.0.1 embedded)"),  # NAT64 into the office
        ("2002:a00:1::", "private (10.0.0.1 embedded)"),  # 6to4
    ],
)
def test_non_public_addresses_are_refused_and_say_why(address: str, kind: str) -> None:
    refusal = DEFAULT.address_refusal(address)
    assert refusal is not None and kind in refusal
    assert "mirror_allowed_networks" in refusal


@pytest.mark.parametrize("address", ["151.101.2.132", "2a04:4e42::644", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert DEFAULT.address_refusal(address) is None


def test_allowed_networks_open_exactly_what_they_list() -> None:
    site = MirrorPolicy.build([], ["10.20.0.0/16", "127.0.0.1/32"])
    assert site.address_refusal("10.20.3.4") is None
    assert site.address_refusal("::ffff:10.20.3.4") is None
    assert site.address_refusal("127.0.0.1") is None
    assert site.address_refusal("10.21.0.1") is not None
    assert site.address_refusal("127.0.0.2") is not None
    assert site.address_refusal("169.254.169.254") is not None


def test_where_a_mirror_may_lead() -> None:
    policy = MirrorPolicy.build(["*.debian.org", "*.fedoraproject.org"], [])
    own = "http://mirror.example.edu/debian"
    # an approved mirror outside the patterns: its own host (any default port), or a pattern
    assert policy.url_refusal("http://mirror.example.edu/debian/dists/x/InRelease", own) is None
    assert policy.url_refusal("https://mirror.example.edu/debian/x", own) is None
    assert policy.url_refusal("http://deb.debian.org/debian/x", own) is None
    other = policy.url_refusal("http://elsewhere.example/x", own)
    assert other is not None and "neither the mirror's host (mirror.example.edu)" in other
    port = policy.url_refusal("http://mirror.example.edu:22/x", own)
    assert port is not None
    # a mirror network's own URL: what it hands out is followed, addresses checked later
    metalink = "https://mirrors.fedoraproject.org/metalink?repo=epel-9"
    assert policy.url_refusal("http://mirror.example.edu/epel/9/", metalink) is None
    # literal addresses are refused at once, whoever points at them
    meta = policy.url_refusal("http://169.254.169.254/latest/", metalink)
    assert meta is not None and "link-local" in meta
    # no origin (a fetch outside a mirror's refresh): the URL is its own origin
    assert policy.url_refusal("http://anything.example/x") is None
    assert policy.url_refusal("gopher://x.example/") is not None
    downgrade = policy.url_refusal(
        "http://deb.debian.org/x", own, previous="https://deb.debian.org/x"
    )
    assert downgrade is not None and "https to http" in downgrade


def test_settings_check_the_policy_and_build_it() -> None:
    with pytest.raises(ConfigError, match="mirror_url_patterns"):
        parse_settings(environ={"PATCHWATCH_MIRROR_URL_PATTERNS": "deb.debian.org,ftp://x"})
    with pytest.raises(ConfigError, match="mirror_allowed_networks"):
        parse_settings(environ={"PATCHWATCH_MIRROR_ALLOWED_NETWORKS": "10.0.0.0/33"})
    with pytest.raises(ConfigError, match="mirror_refresh_max_seconds"):
        parse_settings(environ={"PATCHWATCH_MIRROR_REFRESH_MAX_SECONDS": "0"})
    with pytest.raises(ConfigError, match="refresh_concurrency"):
        parse_settings(environ={"PATCHWATCH_REFRESH_CONCURRENCY": "0"})
    site = parse_settings(
        environ={
            "PATCHWATCH_MIRROR_URL_PATTERNS": "*.debian.org, https://mirror.corp.example/",
            "PATCHWATCH_MIRROR_ALLOWED_NETWORKS": "10.0.0.0/8",
        }
    )
    assert site.mirror_policy.matches("https://mirror.corp.example/debian")
    assert not site.mirror_policy.matches("http://archive.ubuntu.com/ubuntu")
    assert site.mirror_policy.address_refusal("10.9.9.9") is None
    assert Settings().mirror_url_patterns == DEFAULT_MIRROR_URL_PATTERNS
    assert Settings().mirror_allowed_networks == ()


# ------------------------------------------------------------------------- fuzzing

#: Pieces of URLs that parsers disagree about: userinfo, backslashes, control
#: characters, encoded separators, brackets, numeric hosts.
URL_PIECES = [
    "http://", "https://", "HTTP://", "//", "mirror.example.edu", "evil.example", "@", ":",
    "/", "\\", "#", "?", "%40", "%2f", "%2e", "[", "]", "\t", "\n", "\r", " ", ".", "..",
    "80", "443", "8080", "user", "127.0.0.1", "0x7f.1", "2130706433", "::1", "\x00", "\u3002",
    "debian", "\uff4dirror", "xn--",
]  # fmt: skip
HOSTILE = st.one_of(
    st.lists(st.sampled_from(URL_PIECES), max_size=12).map("".join),
    st.text(max_size=80),
)
ORIGIN = "http://mirror.example.edu/debian/"
FUZZ = hypothesis.settings(max_examples=500, deadline=None, database=None)


def host_as_sent(url: str) -> str | None:
    """The host requests would connect to for ``url`` (None when it would refuse it)."""
    prepared = requests.models.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
        host = urllib3.util.parse_url(prepared.url).host
    except (requests.exceptions.RequestException, ValueError, urllib3.exceptions.HTTPError):
        return None
    return host.lower().rstrip(".").strip("[]") if host else None


@FUZZ
@hypothesis.given(HOSTILE)
def test_what_the_policy_lets_through_stays_on_the_mirrors_host(location: str) -> None:
    """A Location header or list entry the rule accepts reaches the mirror's host only.

    The rule reads URLs with urllib.parse, the request is made by requests and urllib3:
    wherever the two would disagree on the host, the rule must have refused.
    """
    policy = MirrorPolicy.build([], [])
    try:
        url = urljoin(ORIGIN, location)
    except ValueError:  # the fetcher refuses such a Location as unusable
        return
    assert policy.matches(url) is False  # no patterns: nothing is covered
    if policy.url_refusal(url, ORIGIN, previous=ORIGIN) is None:
        assert host_as_sent(url) in (None, "mirror.example.edu"), url


@FUZZ
@hypothesis.given(HOSTILE, HOSTILE)
def test_the_policy_never_raises_on_hostile_text(pattern: str, url: str) -> None:
    policy = MirrorPolicy.build(DEFAULT_MIRROR_URL_PATTERNS, ["10.0.0.0/8"])
    assert isinstance(policy.matches(url), bool)
    policy.url_refusal(url, url)
    policy.url_refusal(url, ORIGIN, previous=url)
    try:
        parsed = parse_pattern(pattern)
    except ValueError:
        return
    assert isinstance(parsed.matches(url), bool)


@FUZZ
@hypothesis.given(
    st.one_of(
        st.ip_addresses(network="127.0.0.0/8"),
        st.ip_addresses(network="10.0.0.0/8"),
        st.ip_addresses(network="169.254.0.0/16"),
        st.ip_addresses(network="192.168.0.0/16"),
        st.ip_addresses(network="fc00::/7"),
        st.ip_addresses(network="fe80::/10"),
        st.ip_addresses(network="::ffff:0:0/96"),
    )
)
def test_internal_addresses_are_refused_however_they_are_reached(address: object) -> None:
    host = f"[{address}]" if ":" in str(address) else str(address)
    url = f"http://{host}/latest/meta-data/"
    trusting = MirrorPolicy.build([f"{host}:*", "*.debian.org"], [])
    refusals = [
        trusting.address_refusal(str(address)),
        trusting.url_refusal(url),  # even a pattern naming it does not open it
        trusting.url_refusal(url, "https://deb.debian.org/debian"),  # nor a trusted origin
    ]
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if mapped is not None and address_kind(mapped) is None:
        return  # a public IPv4 address written as IPv6
    assert all(r is not None for r in refusals), (address, refusals)
