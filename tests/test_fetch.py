"""HTTP fetching against a real server on loopback: retries, timeouts, caps, proxies.

The mirror is tests/support/mirrors.py's :class:`MirrorServer` (the ``server`` fixture):
it serves a folder and injects the faults a real mirror has: it hangs, answers 500,
cuts a body short, sends more than it announced. It logs every request so tests can
say exactly what was downloaded.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from patchwatch.domain.errors import FetchError
from patchwatch.domain.mirror_policy import MirrorPolicy
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import FetchStopped
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.fetch import HttpStatusError
from patchwatch.pipeline.fetch import fetch_scope
from tests.support.mirrors import DRIP_LIMIT_SECONDS
from tests.support.mirrors import LIVENESS_SECONDS
from tests.support.mirrors import LOOPBACK_POLICY
from tests.support.mirrors import Fault
from tests.support.mirrors import MirrorServer
from tests.support.network import FakeDns
from tests.support.network import free_port


class Sleeps:
    """Records backoff waits instead of sleeping, so retry tests take no time."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_fetcher(
    timeout: float = 2.0,
    retries: int = 2,
    sleeps: Sleeps | None = None,
    policy: MirrorPolicy = LOOPBACK_POLICY,
    max_seconds: float | None = None,
) -> HttpFetcher:
    return HttpFetcher(
        timeout=timeout, retries=retries, backoff=0.5, sleep=sleeps or Sleeps(), policy=policy,
        max_seconds=max_seconds,
    )  # fmt: skip


# ----------------------------------------------------------------------------- tests


def test_fetch_streams_into_file_with_size_digest_and_validators(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    data = b"Package: x\n" * 10_000
    (root / "Packages").write_bytes(data)
    with make_fetcher() as fetcher:
        got = fetcher.fetch(server.url("Packages"), tmp_path / "out", max_bytes=len(data))
    assert got.path == tmp_path / "out"
    assert got.path.read_bytes() == data
    assert (got.size, got.hash_name, got.digest) == (
        len(data),
        "sha256",
        hashlib.sha256(data).hexdigest(),
    )
    assert got.etag.startswith('"') and got.last_modified.endswith("GMT")
    assert not got.not_modified
    headers = server.headers_seen[0]
    assert headers["User-Agent"].startswith("patchwatch/")
    assert headers["Accept-Encoding"] == "identity"


def test_fetch_hashes_with_the_requested_algorithm(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    (root / "f").write_bytes(b"abc")
    with make_fetcher() as fetcher:
        got = fetcher.fetch(server.url("f"), tmp_path / "f", max_bytes=10, hash_name="sha512")
    assert got.digest == hashlib.sha512(b"abc").hexdigest()


def test_conditional_request_answered_304_writes_nothing(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    (root / "InRelease").write_bytes(b"release")
    with make_fetcher() as fetcher:
        first = fetcher.fetch(server.url("InRelease"), tmp_path / "a", max_bytes=100)
        again = fetcher.fetch(
            server.url("InRelease"), tmp_path / "b", max_bytes=100, etag=first.etag,
            last_modified=first.last_modified,
        )  # fmt: skip
    assert again.not_modified and again.path is None and again.etag == first.etag
    assert not (tmp_path / "b").exists()
    assert server.headers_seen[1]["If-None-Match"] == first.etag
    assert server.headers_seen[1]["If-Modified-Since"] == first.last_modified
    assert [s for _p, s in server.log] == [200, 304]


def test_server_errors_are_retried_with_backoff_then_succeed(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    (root / "f").write_bytes(b"ok")
    server.faults["/f"] = Fault(status=503, times=2)
    sleeps = Sleeps()
    with make_fetcher(retries=2, sleeps=sleeps) as fetcher:
        got = fetcher.fetch(server.url("f"), tmp_path / "f", max_bytes=10)
    assert got.path is not None and got.path.read_bytes() == b"ok"
    assert [s for _p, s in server.log] == [503, 503, 200]
    assert len(sleeps.waits) == 2
    assert 0.25 <= sleeps.waits[0] <= 0.5 and 0.5 <= sleeps.waits[1] <= 1.0  # doubling


def test_persistent_500_gives_up_with_the_status_and_attempts(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    (root / "f").write_bytes(b"ok")
    server.faults["/f"] = Fault(status=500)
    with make_fetcher(retries=2) as fetcher, pytest.raises(FetchError) as info:
        fetcher.fetch(server.url("f"), tmp_path / "f", max_bytes=10)
    assert "HTTP 500" in str(info.value) and "gave up after 3 attempts" in str(info.value)
    assert info.value.url == server.url("f")
    assert len(server.log) == 3
    assert not (tmp_path / "f").exists()


def test_429_waits_at_least_what_retry_after_says(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    (root / "f").write_bytes(b"ok")
    server.faults["/f"] = Fault(status=429, headers=(("Retry-After", "7"),), times=1)
    sleeps = Sleeps()
    with make_fetcher(sleeps=sleeps) as fetcher:
        fetcher.fetch(server.url("f"), tmp_path / "f", max_bytes=10)
    assert sleeps.waits == [7.0]


def test_404_is_not_retried_and_keeps_the_status(server: MirrorServer, tmp_path: Path) -> None:
    with make_fetcher(retries=3) as fetcher, pytest.raises(HttpStatusError) as info:
        fetcher.fetch(server.url("missing"), tmp_path / "f", max_bytes=10)
    assert info.value.status == 404
    assert "HTTP 404" in str(info.value)
    assert len(server.log) == 1


def test_a_server_that_hangs_times_out_after_the_retries(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    (root / "f").write_bytes(b"ok")
    release = threading.Event()  # the server answers only once the fetch has given up
    server.faults["/f"] = Fault(wait=release)
    try:
        with make_fetcher(timeout=0.3, retries=1) as fetcher, pytest.raises(FetchError) as info:
            fetcher.fetch(server.url("f"), tmp_path / "f", max_bytes=10)
    finally:
        release.set()
    assert "timed out after 0.3 s" in str(info.value)
    assert "gave up after 2 attempts" in str(info.value)


def fetch_over_the_cap(
    server: MirrorServer, root: Path, dest: Path, size: int, cap: int, no_length: bool
) -> str:
    """Fetch a ``size``-byte file with ``max_bytes=cap``; the error, once no file is left."""
    (root / "big").write_bytes(b"x" * size)
    if no_length:
        server.faults["/big"] = Fault(no_length=True)
    with make_fetcher() as fetcher, pytest.raises(FetchError) as info:
        fetcher.fetch(server.url("big"), dest, max_bytes=cap)
    assert not dest.exists()
    return str(info.value)


def test_announced_length_above_the_cap_is_refused_before_reading(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    error = fetch_over_the_cap(server, root, tmp_path / "big", 5000, 4096, no_length=False)
    assert "is 5000 bytes, more than the limit of 4096 bytes" in error
    assert len(server.log) == 1  # not retried


def test_unannounced_body_is_cut_at_the_cap(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    error = fetch_over_the_cap(server, root, tmp_path / "big", 300_000, 100_000, no_length=True)
    assert "sent more than the limit of 100000 bytes" in error


def test_body_without_length_is_read_to_the_end(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    (root / "f").write_bytes(b"y" * 70_000)
    server.faults["/f"] = Fault(no_length=True)
    with make_fetcher() as fetcher:
        got = fetcher.fetch(server.url("f"), tmp_path / "f", max_bytes=70_000)
    assert got.size == 70_000


def test_a_body_cut_short_is_retried_and_then_reported(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    (root / "f").write_bytes(b"z" * 10_000)
    server.faults["/f"] = Fault(cut=1000)
    with make_fetcher(retries=1) as fetcher, pytest.raises(FetchError) as info:
        fetcher.fetch(server.url("f"), tmp_path / "f", max_bytes=20_000)
    assert "connection broken after" in str(info.value)
    assert len(server.log) == 2
    assert not (tmp_path / "f").exists()


def test_refused_connection_is_a_clear_failure(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/InRelease"
    with make_fetcher(retries=1) as fetcher, pytest.raises(FetchError) as info:
        fetcher.fetch(url, tmp_path / "f", max_bytes=10)
    assert "connection failed" in str(info.value) and "refused" in str(info.value).lower()


def test_unsupported_scheme_fails_without_retry(tmp_path: Path) -> None:
    with make_fetcher() as fetcher, pytest.raises(FetchError) as info:
        fetcher.fetch("file:///etc/passwd", tmp_path / "f", max_bytes=10)
    assert "refused by the mirror policy" in str(info.value)
    assert "not an http(s) URL" in str(info.value)


def test_redirects_are_followed_and_the_final_url_reported(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    (root / "new").write_bytes(b"moved")
    server.faults["/old"] = Fault(status=301, headers=(("Location", server.url("new")),))
    with make_fetcher() as fetcher:
        got = fetcher.fetch(server.url("old"), tmp_path / "f", max_bytes=10)
    assert got.url == server.url("new") and got.size == 5


def test_proxy_is_taken_from_the_environment(
    server: MirrorServer, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (root / "debian").mkdir()
    (root / "debian" / "InRelease").write_bytes(b"via proxy")
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", server.base)
    with make_fetcher(retries=0) as fetcher:
        got = fetcher.fetch(
            "http://mirror.example.invalid/debian/InRelease", tmp_path / "f", max_bytes=100
        )
    assert got.path is not None and got.path.read_bytes() == b"via proxy"
    assert server.paths() == ["http://mirror.example.invalid/debian/InRelease"]


def test_from_settings_uses_the_http_settings() -> None:
    settings = Settings(
        http_timeout_seconds=4.5, http_retries=7, http_request_max_seconds=42.0,
        mirror_url_patterns=("mirror.example.org",), mirror_allowed_networks=("10.0.0.0/8",),
    )  # fmt: skip
    fetcher = HttpFetcher.from_settings(settings)
    try:
        assert (fetcher.timeout, fetcher.retries) == (4.5, 7)
        assert fetcher.max_seconds == 42.0
        assert fetcher.policy.matches("http://mirror.example.org/debian")
        assert not fetcher.policy.matches("http://deb.debian.org/debian")
        assert fetcher.policy.address_refusal("10.1.2.3") is None
        assert fetcher.policy.address_refusal("192.168.1.1") is not None
    finally:
        fetcher.close()


def test_a_whole_download_is_bounded_in_time(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    """A mirror that trickles data never trips the per-read timeout; this bound stops it."""
    (root / "slow").write_bytes(b"s" * 200_000)
    fetcher = make_fetcher(timeout=2.0, retries=0, max_seconds=1e-6)
    with fetcher, pytest.raises(FetchError) as info:
        fetcher.fetch(server.url("slow"), tmp_path / "slow", max_bytes=300_000)
    assert "download took longer than 1e-06 s" in str(info.value)
    assert not (tmp_path / "slow").exists()


# ------------------------------------------------------------------ hard deadlines


def fetch_in_thread(
    fetcher: HttpFetcher, url: str, dest: Path, scope: dict[str, object] | None = None
) -> tuple[threading.Thread, dict[str, BaseException | object]]:
    """Run one fetch in a thread (inside ``fetch_scope(**scope)``); the outcome lands in a dict.

    A test joins the thread with a generous bound: a fetch that the deadline does not
    cut off would run for DRIP_LIMIT_SECONDS, so the join's bound is the assertion that
    the deadline works, without measuring how long anything took.
    """
    outcome: dict[str, BaseException | object] = {}

    def run() -> None:
        try:
            with fetch_scope(**scope or {}):  # type: ignore[arg-type]
                outcome["result"] = fetcher.fetch(url, dest, max_bytes=1 << 20)
        except BaseException as exc:  # handed to the test to assert on
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_mirror_dripping_its_headers_is_cut_off_at_the_deadline(
    server: MirrorServer, tmp_path: Path
) -> None:
    """A byte every 50 ms never trips the 2 s read timeout; the 0.5 s deadline stops it."""
    server.faults["/InRelease"] = Fault(drip=0.05)
    fetcher = make_fetcher(timeout=2.0, retries=2, max_seconds=0.5)
    with fetcher:
        thread, outcome = fetch_in_thread(fetcher, server.url("InRelease"), tmp_path / "f")
        thread.join(LIVENESS_SECONDS)
        assert not thread.is_alive(), "the dripping headers held the fetch past its deadline"
    error = outcome.get("error")
    assert isinstance(error, FetchError) and not isinstance(error, FetchStopped), outcome
    assert "took longer than 0.5 s" in str(error)
    assert "connecting, headers and body together" in str(error)
    assert server.paths() == ["/InRelease"]  # a deadline is not retried: the time is spent
    assert not (tmp_path / "f").exists()


def test_a_mirror_dripping_its_body_is_cut_off_at_the_deadline(
    server: MirrorServer, tmp_path: Path
) -> None:
    server.faults["/Packages"] = Fault(drip=0.05, drip_body=True)
    with make_fetcher(timeout=2.0, retries=0, max_seconds=0.5) as fetcher:
        thread, outcome = fetch_in_thread(fetcher, server.url("Packages"), tmp_path / "f")
        thread.join(LIVENESS_SECONDS)
        assert not thread.is_alive()
    assert "took longer than 0.5 s" in str(outcome.get("error"))
    assert not (tmp_path / "f").exists()


def test_a_scope_deadline_cuts_requests_shorter_than_their_own(
    server: MirrorServer, tmp_path: Path
) -> None:
    """A mirror's time box ends its requests, whatever each request's own deadline."""
    server.faults["/InRelease"] = Fault(drip=0.05)
    with make_fetcher(timeout=2.0, retries=3, max_seconds=600) as fetcher:
        thread, outcome = fetch_in_thread(
            fetcher, server.url("InRelease"), tmp_path / "f",
            {"seconds": 0.5, "limit": "the mirror's time box"},
        )  # fmt: skip
        thread.join(LIVENESS_SECONDS)
        assert not thread.is_alive()
    assert "took longer than the mirror's time box" in str(outcome.get("error"))


def test_a_stopped_scope_ends_the_request_in_flight(server: MirrorServer, tmp_path: Path) -> None:
    server.faults["/InRelease"] = Fault(hang=DRIP_LIMIT_SECONDS)
    stop = threading.Event()
    with make_fetcher(timeout=60.0, retries=3, max_seconds=600) as fetcher:
        thread, outcome = fetch_in_thread(
            fetcher, server.url("InRelease"), tmp_path / "f", {"stop": stop}
        )
        deadline = time.monotonic() + LIVENESS_SECONDS
        while not server.paths() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.paths() == ["/InRelease"]  # the request is in flight
        stop.set()
        thread.join(LIVENESS_SECONDS)
        assert not thread.is_alive()
        assert isinstance(outcome.get("error"), FetchStopped), outcome
        with fetch_scope(stop=stop), pytest.raises(FetchStopped):
            fetcher.fetch(server.url("InRelease"), tmp_path / "f", max_bytes=10)
    assert server.paths() == ["/InRelease"]  # nothing started after the stop


# --------------------------------------------------------------- the fetch policy


def test_a_redirect_to_the_metadata_address_is_refused_without_a_connection(
    server: MirrorServer, tmp_path: Path, connects: list[tuple[str, int]]
) -> None:
    target = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    server.faults["/InRelease"] = Fault(status=302, headers=(("Location", target),))
    with make_fetcher() as fetcher, pytest.raises(FetchError) as info:
        fetcher.fetch(server.url("InRelease"), tmp_path / "f", max_bytes=100)
    assert "redirect to http://169.254.169.254/latest" in str(info.value)
    assert "169.254.169.254 is a link-local address" in str(info.value)
    assert {host for host, _port in connects} == {"127.0.0.1"}  # only the mirror itself
    assert server.paths() == ["/InRelease"]  # and not retried


def test_a_redirect_to_a_name_that_resolves_to_a_blocked_address_connects_nowhere(
    server: MirrorServer, tmp_path: Path, connects: list[tuple[str, int]],
    fake_dns: FakeDns,
) -> None:  # fmt: skip
    """The name passes the URL rule (a pattern lists it); its address is checked on connect."""
    fake_dns["metadata.mirror.test"] = "169.254.169.254"
    policy = MirrorPolicy.build(["http://127.0.0.1:*", "metadata.mirror.test"], ["127.0.0.1/32"])
    location = "http://metadata.mirror.test/latest/meta-data/"
    server.faults["/InRelease"] = Fault(status=301, headers=(("Location", location),))
    with make_fetcher(policy=policy) as fetcher, pytest.raises(FetchError) as info:
        fetcher.fetch(server.url("InRelease"), tmp_path / "f", max_bytes=100)
    assert "refused to connect to metadata.mirror.test" in str(info.value)
    assert "169.254.169.254 is a link-local address" in str(info.value)
    assert {host for host, _port in connects} == {"127.0.0.1"}
    assert server.paths() == ["/InRelease"]


def test_the_default_policy_refuses_loopback_without_a_connection(
    server: MirrorServer, root: Path, tmp_path: Path, connects: list[tuple[str, int]],
    fake_dns: FakeDns,
) -> None:  # fmt: skip
    (root / "InRelease").write_bytes(b"secret")
    with HttpFetcher(timeout=1.0, retries=2, sleep=Sleeps()) as fetcher:
        with pytest.raises(FetchError) as info:
            fetcher.fetch(server.url("InRelease"), tmp_path / "f", max_bytes=100)
        assert "127.0.0.1 is a loopback address, not in mirror_allowed_networks" in str(info.value)
        # a name is checked on the address it resolves to, when connecting: one that a
        # pattern trusts but that resolves to loopback (DNS rebinding) gets no further
        fake_dns["deb.debian.org"] = "127.0.0.1"
        url = f"http://deb.debian.org:{server.port}/InRelease"
        with fetch_scope(origin="http://deb.debian.org/debian"), pytest.raises(FetchError) as info:
            fetcher.fetch(url, tmp_path / "f", max_bytes=100)
        assert "refused to connect to deb.debian.org: 127.0.0.1 is a loopback" in str(info.value)
    assert connects == []
    assert server.paths() == []


def test_redirects_stay_on_the_same_host_unless_a_pattern_allows_the_target(
    server: MirrorServer, root: Path, tmp_path: Path, connects: list[tuple[str, int]],
    fake_dns: FakeDns,
) -> None:  # fmt: skip
    (root / "new").write_bytes(b"moved")
    fake_dns["other.mirror.test"] = "127.0.0.1"
    other = f"http://other.mirror.test:{server.port}/new"
    server.faults["/away"] = Fault(status=302, headers=(("Location", other),))
    server.faults["/home"] = Fault(status=307, headers=(("Location", "/new"),))
    loopback_only = MirrorPolicy.build([], ["127.0.0.1/32"])
    with make_fetcher(policy=loopback_only) as fetcher:
        got = fetcher.fetch(server.url("home"), tmp_path / "f", max_bytes=10)
        assert got.url == server.url("new") and got.size == 5
        with pytest.raises(FetchError) as info:
            fetcher.fetch(server.url("away"), tmp_path / "f", max_bytes=10)
    assert "other.mirror.test is neither the mirror's host (127.0.0.1)" in str(info.value)
    assert server.paths() == ["/home", "/new", "/away"]
    trusting = MirrorPolicy.build([f"other.mirror.test:{server.port}"], ["127.0.0.1/32"])
    with make_fetcher(policy=trusting) as fetcher:
        got = fetcher.fetch(server.url("away"), tmp_path / "f", max_bytes=10)
    assert got.url == other and got.size == 5


def test_a_redirect_from_https_to_http_is_refused() -> None:
    policy = MirrorPolicy.build(["*.debian.org"], [])
    refusal = policy.url_refusal(
        "http://deb.debian.org/x", "https://deb.debian.org/x", previous="https://deb.debian.org/x"
    )
    assert refusal is not None and "from https to http" in refusal


def test_too_many_redirects_fail_without_retry(server: MirrorServer, tmp_path: Path) -> None:
    server.faults["/loop"] = Fault(status=302, headers=(("Location", "/loop"),))
    with make_fetcher(retries=2) as fetcher, pytest.raises(FetchError) as info:
        fetcher.fetch(server.url("loop"), tmp_path / "f", max_bytes=10)
    assert "more than 5 redirects" in str(info.value)
    assert len(server.paths()) == 6


def test_one_fetcher_serves_threads_each_with_its_own_session(
    server: MirrorServer, root: Path, tmp_path: Path
) -> None:
    (root / "f").write_bytes(b"x" * 1000)
    sessions: list[object] = []
    with make_fetcher() as fetcher:

        def run(n: int) -> None:
            fetcher.fetch(server.url("f"), tmp_path / f"f{n}", max_bytes=1000)
            sessions.append(fetcher.session)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(LIVENESS_SECONDS)
    assert len({id(s) for s in sessions}) == 3
    assert all((tmp_path / f"f{n}").stat().st_size == 1000 for n in range(3))


# ------------------------------------------------------------------------------ TLS


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made by openssl, as a real server's is)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    proc = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, timeout=60,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"openssl could not make a certificate: {proc.stderr.decode()[-500:]}")
    return cert, key


def test_https_mirrors_go_through_the_same_guard_and_deadline(
    server: MirrorServer, root: Path, tmp_path: Path, tls_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch, connects: list[tuple[str, int]],
) -> None:  # fmt: skip
    """TLS wraps the socket the guard connected; the watchdog still cuts a stalled handshake."""
    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    (root / "InRelease").write_bytes(b"over tls")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    https = f"https://127.0.0.1:{server.port}/InRelease"
    with make_fetcher() as fetcher:
        got = fetcher.fetch(https, tmp_path / "f", max_bytes=100)
    assert got.path is not None and got.path.read_bytes() == b"over tls"
    assert connects == [("127.0.0.1", server.port)]

    # a "TLS server" that announces a 16 KB handshake record and sends it a byte at a time
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def stall() -> None:
        conn, _addr = listener.accept()
        with conn:
            try:
                conn.sendall(b"\x16\x03\x03\x40\x00")
                for _ in range(int(DRIP_LIMIT_SECONDS / 0.05)):
                    conn.sendall(b"\x00")
                    time.sleep(0.05)
            except OSError:
                return

    threading.Thread(target=stall, daemon=True).start()
    with listener, make_fetcher(timeout=2.0, retries=0, max_seconds=0.5) as fetcher:
        thread, outcome = fetch_in_thread(
            fetcher, f"https://127.0.0.1:{port}/InRelease", tmp_path / "g"
        )
        thread.join(LIVENESS_SECONDS)
        assert not thread.is_alive(), "a stalled TLS handshake held the fetch past its deadline"
    assert "took longer than 0.5 s" in str(outcome.get("error"))
