"""The web console in a real browser: Debian's headless Chromium against `patchwatch serve`.

What a person does: sign in, filter hosts, open a host, follow a package to the hosts
that run it, mark a repository security and see the host's count change; a viewer
refused an action, a forged form refused, a session that runs out. Every page is
screenshotted at desktop and phone width (the run's summary names the folder) and
checked with axe-core: no serious or critical violation.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from patchwatch.store.db import database
from patchwatch.store.db import make_database
from patchwatch.store.models import Repository
from tests.support.browser import axe_source
from tests.support.browser import axe_violations
from tests.support.browser import chromium
from tests.support.browser import describe
from tests.support.browser import screenshot
from tests.support.console import seed_fleet

pytestmark = pytest.mark.slow

QUIET = {  # nothing reads a mirror: the fleet's mirror data is written by the test
    "PATCHWATCH_FOLLOW_REPORTS": "false",
    "PATCHWATCH_REFRESH_INTERVAL_MINUTES": "100000",
}


class HttpClient:
    """Enough of Flask's test client for ``seed_fleet``, over real HTTP."""

    def __init__(self, base: str) -> None:
        self.base = base

    def post(self, path: str, data: str, headers: dict[str, str]) -> Any:
        req = urllib.request.Request(self.base + path, data=data.encode(), headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()

        class Answer:
            status_code = resp.status

            def get_data(self, as_text: bool = False) -> str:
                return body.decode()

        return Answer()


def open_store(url: str) -> Any:
    handle = make_database(url)
    database.initialize(handle)
    handle.connect(reuse_if_open=True)
    return handle


def token(server: Any, kind: str) -> str:
    proc = server.cli("token", "create", f"--{kind}", "--comment", f"browser {kind}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def text(driver: Any) -> str:
    return driver.find_element("tag name", "body").text


def navigates(driver: Any, action: Any) -> None:
    """Run ``action`` (a click, a form sent) and wait until the next page has loaded."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element("tag name", "html")
    action()

    def left(_driver: Any) -> bool:
        # stale once the next page replaced it; mid-navigation chromedriver may instead
        # answer "Node with given id does not belong to the document": gone just as well
        try:
            old.is_enabled()
        except WebDriverException:
            return True
        return False

    WebDriverWait(driver, 30).until(left)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def click(driver: Any, by: str, what: str) -> None:
    navigates(driver, driver.find_element(by, what).click)


def sign_in(driver: Any, base: str, secret: str) -> None:
    if "/ui/login" not in driver.current_url:
        driver.get(base + "/ui/")
    assert "/ui/login" in driver.current_url
    driver.find_element("id", "token").send_keys(secret)
    click(driver, "css selector", "main form button[type=submit]")
    assert "/ui/login" not in driver.current_url, text(driver)


def sign_out(driver: Any) -> None:
    click(driver, "css selector", "header form.who button")
    assert "/ui/login" in driver.current_url


def post_form(driver: Any, action: str, fields: dict[str, str]) -> None:
    """Submit a form this page does not have (what a forged page would send).

    WebDriver's scripts run outside the page's Content-Security-Policy, which forbids
    every script of the page's own."""
    navigates(driver, lambda: driver.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "for (const [k, v] of Object.entries(arguments[1])) {"
        "  const i = document.createElement('input'); i.type = 'hidden'; i.name = k;"
        "  i.value = v; f.appendChild(i); }"
        "document.body.appendChild(f); f.submit();",
        action, fields,
    ))  # fmt: skip


def csrf(driver: Any) -> str:
    return driver.find_element("css selector", "header form.who input[name=csrf]").get_attribute(
        "value"
    )


def security_cell(driver: Any, host: str) -> str:
    row = driver.find_element("xpath", f"//tr[th/a[text()='{host}']]")
    return row.find_elements("tag name", "td")[1].text


def wait_for(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_console_in_a_browser(server_factory: Any) -> None:
    axe = axe_source()
    server = server_factory(QUIET)
    base = server.base.replace("127.0.0.1", "localhost")  # a secure context for the cookie
    open_store(server.database_url)
    seed_fleet(HttpClient(server.base))
    viewer = token(server, "viewer")
    admin = token(server, "admin")
    repo = Repository.get()
    checked: list[str] = []

    def look(name: str) -> None:
        screenshot(driver, name)
        violations = axe_violations(driver, axe)
        assert not violations, f"{name}: {describe(violations)}"
        checked.append(name)

    with chromium() as driver:
        # the check can fail: an unlabelled field and an image without text are caught
        driver.get("data:text/html,<html><body><img src='x.png'><input></body></html>")
        caught = {v["id"] for v in axe_violations(driver, axe)}
        assert {"image-alt", "label"} <= caught, caught
        driver.get(base + "/ui/hosts")
        look("login")
        sign_in(driver, base, viewer)
        assert driver.current_url.endswith("/ui/hosts")  # back where the link pointed
        look("hosts")
        # filter: tag web, through the form as a person fills it
        driver.find_element("id", "f-tag").send_keys("web")
        click(driver, "css selector", "form.filters button[type=submit]")
        assert "2 hosts" in text(driver) and "db1.example.org" not in text(driver)
        look("hosts-filtered")
        click(driver, "link text", "web1.example.com")
        assert "Pending updates" in text(driver) and "1.1-2" in text(driver)
        look("host")
        # follow the package to the hosts that run it
        click(driver, "xpath", "//section[h2='Pending updates']//a[text()='pkg1']")
        assert "/ui/packages/pkg1" in driver.current_url
        for host in ("web1.example.com", "web2.example.com", "db1.example.org"):
            assert host in text(driver)
        look("package")
        click(driver, "link text", "db1.example.org")
        assert "/ui/hosts/db1.example.org" in driver.current_url
        for path, name in (("/ui/", "attention"), ("/ui/packages?q=pkg", "packages"),
                           ("/ui/repositories", "repositories"),
                           (f"/ui/repositories/{repo.id}", "repository-viewer"),
                           ("/ui/mirrors", "mirrors"), ("/ui/os", "os-groups"),
                           ("/ui/hosts/web1.example.com/diff?other=db1.example.org", "diff"),
                           ("/ui/audit", "audit")):  # fmt: skip
            driver.get(base + path)
            look(name)
        # a viewer's action is refused, whatever form it sends
        post_form(driver, f"{base}/ui/repositories/{repo.id}/security",
                  {"csrf": csrf(driver), "value": "yes", "confirm": "yes"})  # fmt: skip
        assert "Not allowed" in text(driver)
        look("refused-viewer")
        sign_out(driver)

        sign_in(driver, base, admin)
        driver.get(base + "/ui/hosts")
        assert security_cell(driver, "web1.example.com") == "0"
        # a form without this session's CSRF value is refused
        post_form(driver, f"{base}/ui/repositories/{repo.id}/security",
                  {"csrf": "forged", "value": "yes", "confirm": "yes"})  # fmt: skip
        assert "CSRF" in text(driver)
        look("refused-csrf")
        # mark the repository security: confirm, done, and web1's count follows
        driver.get(f"{base}/ui/repositories/{repo.id}")
        look("repository-admin")
        click(driver, "xpath", "//button[text()='Mark security']")
        assert "Confirm" in text(driver)
        look("confirm")
        click(driver, "xpath", "//button[text()='Yes, do it']")
        assert "Done" in text(driver)
        driver.get(base + "/ui/hosts")
        assert security_cell(driver, "web1.example.com") == "1"
        driver.get(base + "/ui/audit")
        assert "repository_security" in text(driver) and "browser admin" in text(driver)
    assert len(checked) >= 15


def test_a_session_runs_out(server_factory: Any) -> None:
    server = server_factory({**QUIET, "PATCHWATCH_CONSOLE_SESSION_MINUTES": "0.05"})
    base = server.base.replace("127.0.0.1", "localhost")
    viewer = token(server, "viewer")
    with chromium() as driver:
        sign_in(driver, base, viewer)
        assert "What needs attention" in text(driver)

        def ended() -> bool:
            driver.get(base + "/ui/hosts")
            return "/ui/login" in driver.current_url

        wait_for(ended, "the 3-second session to end")
        assert "Your session has ended" in text(driver)
        assert "expired=1" in driver.current_url
        with urllib.request.urlopen(base + "/healthz") as resp:  # the server is fine
            assert json.load(resp)["ok"] is True
