"""The wheel, installed outside the repository, behaves like a Python package.

Everything installs under ``patchwatch.``: a distribution that ships its own ``cli``
package (a common name) neither shadows patchwatch's command line nor deletes its files
when it is uninstalled. The wheel is built for real (pip, with build isolation: setuptools
comes from the package registry) and installed into a fresh venv in a temporary folder;
its runtime dependencies are borrowed from the test venv through a path entry, so no
network is needed to install them and nothing of the checkout is importable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import site
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.network import NO_EGRESS_ENV
from tests.support.paths import ROOT
from tests.support.servers import Server

pytestmark = pytest.mark.slow

SERVICES = ("cli", "receiver", "scheduler", "exporter", "agent")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(ROOT)],
        cwd=dest)  # fmt: skip
    (built,) = dest.glob("patchwatch-*.whl")
    return built


class Venv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        self.python = self.bin / "python"
        self.env = {"PATH": f"{self.bin}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(path),
                    **NO_EGRESS_ENV}  # fmt: skip

    def site_packages(self) -> Path:
        code = "import sysconfig; print(sysconfig.get_path('purelib'))"
        out = run([str(self.python), "-c", code], cwd=self.path)
        return Path(out.stdout.strip())

    def pip(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([str(self.python), "-m", "pip", "-q", "--disable-pip-version-check", *args],
                   cwd=self.path, env=self.env)  # fmt: skip


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    root = tmp_path_factory.mktemp("installed")
    env = Venv(root / "venv")
    run([sys.executable, "-m", "venv", str(env.path)], cwd=root)
    env.pip("install", "--no-deps", "--no-index", str(wheel))
    # dependencies (flask, peewee, ...) from the test venv: a plain path entry, so that
    # its .pth files (the checkout's editable install among them) are not run
    (env.site_packages() / "borrowed-dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n"
    )
    yield env


def other_cli_wheel(dest: Path) -> Path:
    """A wheel of another distribution that ships a top-level ``cli`` package."""
    files = {
        "cli/__init__.py": b'def hello():\n    return "the other cli"\n',
        "othercli-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: othercli\nVersion: 1.0\n",
        "othercli-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("othercli-1.0.dist-info/RECORD,,")
    path = dest / "othercli-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("othercli-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_the_wheel_holds_one_top_level_package_with_the_operator_files(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {
        "patchwatch",
        f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info",
    }
    for service in SERVICES:
        assert f"patchwatch/{service}/__init__.py" in names
    for asset in ("patchwatch/assets/alerts/patchwatch.rules.yml",
                  "patchwatch/assets/alerts/alertmanager.example.yml",
                  "patchwatch/assets/dashboards/patchwatch-host.json",
                  "patchwatch/assets/systemd/patchwatch.service",
                  "patchwatch/agent/hooks/apt/80patchwatch",
                  "patchwatch/agent/agent.conf.example",
                  "patchwatch/domain/schemas/report-v1.json"):  # fmt: skip
        assert asset in names, asset


def test_every_package_of_the_checkout_is_in_the_wheel(wheel: Path) -> None:
    """A new subpackage (a folder with __init__.py) under a service cannot be left out."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for service in SERVICES:
        for init in (ROOT / service).rglob("__init__.py"):
            rel = init.relative_to(ROOT).as_posix()
            assert f"patchwatch/{rel}" in names, rel


def test_a_distribution_with_its_own_cli_package_neither_shadows_nor_deletes_patchwatch(
    venv: Venv, tmp_path: Path
) -> None:
    venv.pip("install", "--no-deps", "--no-index", str(other_cli_wheel(tmp_path)))
    other = run([str(venv.python), "-c", "import cli; print(cli.hello())"], cwd=tmp_path,
                env=venv.env)  # fmt: skip
    assert other.stdout.strip() == "the other cli"
    version = run([str(venv.bin / "patchwatch"), "--version"], cwd=tmp_path, env=venv.env)
    assert version.stdout.startswith("patchwatch ")

    venv.pip("uninstall", "-y", "othercli")
    gone = run([str(venv.python), "-c", "import cli"], cwd=tmp_path, env=venv.env, check=False)
    assert gone.returncode != 0
    assert (venv.site_packages() / "patchwatch" / "cli" / "main.py").is_file()
    listed = run([str(venv.bin / "patchwatch"), "assets", "x", "--list"], cwd=tmp_path,
                 env=venv.env)  # fmt: skip
    assert "alerts/patchwatch.rules.yml" in listed.stdout


def test_nothing_of_the_checkout_is_imported_by_the_installed_package(
    venv: Venv, tmp_path: Path
) -> None:
    out = run([str(venv.python), "-c",
               "import patchwatch.cli.main, patchwatch.receiver.app, patchwatch.exporter.app, "
               "patchwatch.scheduler.runner, patchwatch.agent.patchwatch_agent as a, sys; "
               "print(a.__file__); print(sorted(m for m in sys.modules "
               "if m.split('.')[0] in ('cli', 'receiver', 'scheduler', 'exporter', 'agent')))"],
              cwd=tmp_path, env=venv.env)  # fmt: skip
    path, top_level = out.stdout.splitlines()
    assert path.startswith(str(venv.path)), path
    assert top_level == "[]"


def test_assets_written_from_the_installed_wheel_equal_the_checkout(
    venv: Venv, tmp_path: Path
) -> None:
    dest = tmp_path / "assets"
    run([str(venv.bin / "patchwatch"), "assets", str(dest)], cwd=tmp_path, env=venv.env)
    expected = {
        "alerts": ROOT / "alerts",
        "grafana/dashboards": ROOT / "grafana" / "dashboards",
        "systemd": ROOT / "deploy",
    }
    for written, source in expected.items():
        for path in source.rglob("*"):
            if path.is_file():
                rel = path.relative_to(source)
                assert (dest / written / rel).read_bytes() == path.read_bytes(), rel
    for path in (ROOT / "agent" / "hooks").rglob("*"):
        if path.is_file():
            assert (dest / "agent" / path.relative_to(ROOT / "agent")).read_bytes() == (
                path.read_bytes()
            )
    agent = dest / "agent" / "patchwatch_agent.py"
    assert agent.read_bytes() == (ROOT / "agent" / "patchwatch_agent.py").read_bytes()
    assert os.access(agent, os.X_OK)
    # the example configuration is every default, and reads back
    example = dest / "patchwatch.example.toml"
    shown = run([str(venv.bin / "patchwatch"), "--config", str(example), "config"],
                cwd=tmp_path, env=venv.env)  # fmt: skip
    assert "data_dir" in shown.stdout
    # written twice: the operator's edits are kept unless --force
    (dest / "alerts" / "patchwatch.rules.yml").write_text("# edited\n")
    again = run([str(venv.bin / "patchwatch"), "assets", str(dest)], cwd=tmp_path,
                env=venv.env, check=False)  # fmt: skip
    assert again.returncode == 2 and "--force" in again.stderr
    assert (dest / "alerts" / "patchwatch.rules.yml").read_text() == "# edited\n"


def test_the_installed_server_and_agent_work_together(venv: Venv, tmp_path: Path) -> None:
    work = tmp_path / "site"
    work.mkdir()
    srv = Server(work, env={"PATH": venv.env["PATH"]}, command=[str(venv.bin / "patchwatch")],
                 cwd=work).start()  # fmt: skip
    try:
        token = srv.cli("token", "create", "--enroll").stdout.strip()
        admin = srv.cli("token", "create", "--admin").stdout.strip()
        assert token and admin
        agent_env = {**venv.env, "PATCHWATCH_SERVER": srv.base, "PATCHWATCH_TOKEN": token}
        out = run([str(venv.bin / "patchwatch-agent"), "--spool-dir", str(work / "spool"),
                   "--hostname", "wheel1.example.com"], cwd=work, env=agent_env)  # fmt: skip
        assert token not in out.stdout + out.stderr
        deadline = time.monotonic() + 60
        hosts: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            listed = srv.cli("hosts", "list", "--format", "json")
            hosts = json.loads(listed.stdout or "[]")
            if hosts and hosts[0].get("packages"):
                break
            time.sleep(0.3)
        assert [h["name"] for h in hosts] == ["wheel1.example.com"], srv.log()[-2000:]
        assert hosts[0]["packages"], hosts[0]
    finally:
        srv.stop()


def test_the_checkout_imports_the_services_by_their_installed_names() -> None:
    """``receiver`` and ``patchwatch.receiver`` would be two modules from one file (metrics
    registered twice, state kept apart): everything imports the installed name."""
    import re

    top_level = re.compile(r"^\s*(?:from|import) (?:" + "|".join(SERVICES) + r")\b", re.M)
    offenders = []
    for folder in (*SERVICES, "patchwatch", "tests", "bench", "scripts", "grafana"):
        for path in (ROOT / folder).rglob("*.py"):
            if top_level.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
