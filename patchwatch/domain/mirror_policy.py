"""Which URLs and addresses the server may fetch mirror metadata from (pure).

Hosts tell the server which repositories to read, so every mirror URL is chosen by
whoever controls a reporting host; a mirror in turn chooses where its redirects,
``xml:base`` and mirrorlist/metalink entries lead. Without a rule the server would
fetch from its own loopback, the cloud metadata address (169.254.169.254) or the
office network on anyone's say-so, and show the failures with their timings to
operators, which makes it a port scanner. The rule, applied by ``patchwatch.pipeline.fetch``
to every URL a mirror's refresh touches:

1. Only ``http`` and ``https``; a redirect never goes from https to http.
2. The host is the mirror's own host, or the URL matches ``mirror_url_patterns``,
   or the mirror's own URL matches them: the distributions' mirror networks hand out
   third-party mirrors through redirects, mirrorlists and metalinks, so what they
   point to is followed wherever it is (on a public address, by rule 3).
3. Every address the server connects to is a public (globally routable) address,
   or in a documentation prefix (nothing internal lives there), unless it lies in
   ``mirror_allowed_networks``. It is checked on the addresses the
   name resolved to, right before connecting, so a name that resolves to a public
   address when checked and to a private one when used (DNS rebinding) gains nothing.

Repositories whose mirror URLs match no pattern wait for an operator's approval
(``patchwatch repos approve``) before they are read at all: see ``patchwatch.pipeline.refresh``.

Pattern syntax: ``[scheme://]host[:port][/path]``. No scheme means http and https;
``*.example.org`` means example.org and every name under it; no port means the
scheme's default port (``:*`` any port); a path is a prefix, whole segments only.
"""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_MIRROR_URL_PATTERNS",
    "MirrorPolicy",
    "UrlPattern",
    "address_kind",
    "parse_pattern",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The distributions' own mirror networks: what a repository reported by a host is read
#: from without an operator's approval. Everything else waits for ``repos approve``.
DEFAULT_MIRROR_URL_PATTERNS: tuple[str, ...] = (
    "*.debian.org",
    "*.ubuntu.com",
    "*.fedoraproject.org",
    "*.centos.org",
    "*.rockylinux.org",
    "*.almalinux.org",
    "*.opensuse.org",
    "*.suse.com",
    "*.redhat.com",
    "yum.oracle.com",
    "cdn.amazonlinux.com",
)

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_DOCUMENTATION = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


@dataclass(frozen=True, slots=True)
class UrlPattern:
    """One entry of ``mirror_url_patterns``, parsed (see the module docstring)."""

    text: str
    schemes: tuple[str, ...]
    host: str  # lower case, without the "*." of a domain pattern
    subdomains: bool  # "*.host": the host and every name under it
    port: int | None  # None: any port; 0: the URL's scheme's default port
    path: str  # "" or "/a/b" (no trailing slash)

    def matches(self, url: str) -> bool:
        """Whether ``url`` is covered by this pattern (False for any unusable URL)."""
        parts = _split(url)
        if parts is None:
            return False
        scheme, host, port, path = parts
        if scheme not in self.schemes:
            return False
        if self.subdomains:
            if host != self.host and not host.endswith("." + self.host):
                return False
        elif host != self.host:
            return False
        wanted = DEFAULT_PORTS[scheme] if self.port == 0 else self.port
        if wanted is not None and port != wanted:
            return False
        return not self.path or path == self.path or path.startswith(self.path + "/")


def parse_pattern(text: str) -> UrlPattern:
    """Parse one pattern; :class:`ValueError` says what is wrong with it."""
    raw = text.strip()
    if not raw:
        raise ValueError("empty pattern")
    schemes: tuple[str, ...] = SCHEMES
    rest = raw
    if "://" in raw:
        scheme, rest = raw.split("://", 1)
        scheme = scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError(f"{text!r}: only http and https mirrors are read")
        schemes = (scheme,)
    authority, slash, path = rest.partition("/")
    if "@" in authority or "?" in rest or "#" in rest:
        raise ValueError(f"{text!r}: expected [scheme://]host[:port][/path]")
    host, port_text = authority, ""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unclosed [ in the host")
        host, port_text = authority[1:end], authority[end + 1 :].removeprefix(":")
        if authority[end + 1 :] and not authority[end + 1 :].startswith(":"):
            raise ValueError(f"{text!r}: expected :port after the address")
    elif ":" in authority:
        host, port_text = authority.rsplit(":", 1)
    host = host.lower().rstrip(".")
    subdomains = host.startswith("*.")
    if subdomains:
        host = host[2:]
    if not host or "*" in host or any(c.isspace() for c in host):
        raise ValueError(f"{text!r}: a host is a name, *.domain, or an address")
    port: int | None
    if port_text == "*":
        port = None
    elif port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: bad port {port_text!r}")
        port = int(port_text)
    else:
        port = 0
    clean = _clean_path("/" + path) if slash else ""
    return UrlPattern(raw, schemes, host, subdomains, port, clean.rstrip("/"))


def _clean_path(path: str) -> str:
    """The path with ``.``/``..`` segments resolved (as HTTP clients send it)."""
    if not path:
        return "/"
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _split(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) of an http(s) URL; None when it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in SCHEMES or not host:
        return None
    return (
        scheme,
        host,
        port if port is not None else DEFAULT_PORTS[scheme],
        _clean_path(parts.path),
    )


def _as_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def address_kind(address: IPAddress) -> str | None:
    """Why ``address`` is not a public address (``"loopback"``...), None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and any(address in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_kind(embedded)
            return f"{inner} ({embedded} embedded)" if inner else None
    # Documentation prefixes (RFC 5737, RFC 3849) are not refused: no internal service
    # lives there, so reaching one exposes nothing, and test networks and sandboxes put
    # mirror caches there (deb.debian.org resolves to 203.0.113.80 on some).
    documentation = any(address in net for net in _DOCUMENTATION)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("shared (carrier-grade NAT)", address in _SHARED),
        ("private", address.is_private and not documentation),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global and not documentation),
    )
    return next((kind for kind, hit in checks if hit), None)


@dataclass(frozen=True)
class MirrorPolicy:
    """The fetch policy: URL patterns that are trusted, networks that may be reached."""

    patterns: tuple[UrlPattern, ...] = ()
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def build(cls, patterns: Iterable[str], networks: Iterable[str]) -> MirrorPolicy:
        """Parse the two settings; :class:`ValueError` names the first bad entry."""
        nets = []
        for net in networks:
            try:
                nets.append(ipaddress.ip_network(net.strip(), strict=False))
            except ValueError:
                raise ValueError(f"not a network: {net!r}") from None
        return cls(tuple(parse_pattern(p) for p in patterns), tuple(nets))

    def matches(self, url: str) -> bool:
        """Whether ``url`` is covered by ``mirror_url_patterns`` (read without approval)."""
        return any(p.matches(url) for p in self.patterns)

    def address_refusal(self, address: str) -> str | None:
        """Why connecting to ``address`` is refused, or None when it is allowed."""
        ip = _as_address(address)
        if ip is None:
            return f"{address} is not an IP address"
        check = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
        if any(check in net or ip in net for net in self.allowed_networks):
            return None
        kind = address_kind(ip)
        if kind is None:
            return None
        article = "an" if kind[0] in "aeiou" else "a"
        return f"{address} is {article} {kind} address, not in mirror_allowed_networks"

    def url_refusal(
        self, url: str, origin: str | None = None, previous: str | None = None
    ) -> str | None:
        """Why the refresh of the mirror at ``origin`` may not fetch ``url``; None if it may.

        ``previous`` is the URL that redirected to ``url``, if any. Addresses are
        checked again when connecting (:meth:`address_refusal`); here only a host
        written as an address is.
        """
        parts = _split(url)
        if parts is None:
            return f"{_cut(url)} is not an http(s) URL with a host"
        scheme, host, port, _path = parts
        if previous is not None:
            before = _split(previous)
            if before is not None and before[0] == "https" and scheme == "http":
                return f"redirect from https to http ({_cut(url)}) refused"
        literal = _as_address(host)
        if literal is not None:
            refusal = self.address_refusal(host)
            if refusal is not None:
                return refusal
        if origin is None or self.matches(url) or self.matches(origin):
            return None
        home = _split(origin)
        if home is not None and host == home[1] and port in (home[2], DEFAULT_PORTS[scheme]):
            return None
        where = home[1] if home is not None else _cut(origin)
        return f"{host} is neither the mirror's host ({where}) nor covered by mirror_url_patterns"


def _cut(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[:limit] + "..."
