"""Settings: one table, file + environment, clear errors, documented in the README."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from patchwatch.cli.tools_cmd import settings_markdown
from patchwatch.domain.errors import ConfigError
from patchwatch.domain.settings import SETTINGS
from patchwatch.domain.settings import Settings
from patchwatch.domain.settings import describe
from patchwatch.domain.settings import load_settings
from patchwatch.domain.settings import mask_url
from patchwatch.domain.settings import parse_settings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_sqlite_in_data_dir_on_loopback() -> None:
    s = parse_settings()
    assert s.bind.startswith("127.0.0.1:")
    assert s.resolved_database_url.startswith("sqlite:///")
    assert s.resolved_database_url.endswith("/data/patchwatch.db")


def test_environment_overrides_file_and_overrides_win(tmp_path: Path) -> None:
    conf = tmp_path / "p.toml"
    conf.write_text('[patchwatch]\nworkers = 3\nbind = "127.0.0.1:9000"\nreports_keep = 4\n')
    s = load_settings(
        {"PATCHWATCH_WORKERS": "5", "PATCHWATCH_CONFIG": str(conf)},
        overrides={"bind": "127.0.0.1:9100"},
    )
    assert (s.workers, s.bind, s.reports_keep) == (5, "127.0.0.1:9100", 4)


def test_lists_and_booleans_parse_from_env() -> None:
    s = parse_settings(
        environ={
            "PATCHWATCH_PROTOCOL1_NETWORKS": "10.0.0.0/8, 192.168.1.0/24",
            "PATCHWATCH_PROCESS_INLINE": "no",
        }
    )
    assert s.protocol1_networks == ("10.0.0.0/8", "192.168.1.0/24")
    assert s.process_inline is False


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"PATCHWATCH_WORKERS": "many"}, "workers"),
        ({"PATCHWATCH_WORKERS": "0"}, "workers"),
        ({"PATCHWATCH_BIND": "localhost"}, "bind"),
        ({"PATCHWATCH_PROCESS_INLINE": "maybe"}, "process_inline"),
        ({"PATCHWATCH_PROTOCOL1_NETWORKS": "10.0.0.0/33"}, "protocol1_networks"),
        ({"PATCHWATCH_DATABASE_URL": "mysql://x"}, "database_url"),
        ({"PATCHWATCH_LOG_LEVEL": "LOUD"}, "log_level"),
        ({"PATCHWATCH_HTTP_TIMEOUT_SECONDS": "-1"}, "http_timeout_seconds"),
    ],
)
def test_bad_value_names_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(environ=env)
    assert err.value.setting.startswith(setting)


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    conf = tmp_path / "p.toml"
    conf.write_text("wokers = 3\n")
    with pytest.raises(ConfigError, match=r"wokers.*unknown setting"):
        load_settings({}, str(conf))


def test_a_removed_setting_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade must not stop a server whose file still sets a setting that was removed:
    it is read, named in a warning, and has no effect."""
    conf = tmp_path / "p.toml"
    conf.write_text("report_claim_timeout_seconds = 30\nworkers = 3\n")
    env = {"PATCHWATCH_REPORT_CLAIM_TIMEOUT_SECONDS": "40"}
    with caplog.at_level("WARNING", logger="patchwatch.domain.settings"):
        settings = load_settings(env, str(conf))
    assert settings.workers == 3
    assert not hasattr(settings, "report_claim_timeout_seconds")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2, warned
    assert all("report_claim_timeout_seconds" in w and "removed" in w for w in warned)
    assert str(conf) in warned[0] and "PATCHWATCH_REPORT_CLAIM_TIMEOUT_SECONDS" in warned[1]


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    conf = tmp_path / "p.toml"
    conf.write_text("workers = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, str(conf))


def test_secrets_are_masked() -> None:
    s = Settings(database_url="postgresql://pw:hunter2@db:5432/pw", admin_token="pw_abc_def")
    shown = dict((name, value) for name, value, _ in describe(s))
    assert "hunter2" not in shown["database_url"]
    assert shown["database_url"].startswith("postgresql://pw:")
    assert shown["admin_token"] == "********"
    assert mask_url("sqlite:////x.db") == "sqlite:////x.db"


def test_every_setting_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for f in SETTINGS:
        assert f.metadata["help"].endswith("."), f.name
    start = readme.index("<!-- settings-table:start -->")
    end = readme.index("<!-- settings-table:end -->")
    embedded = readme[start:end].split("\n", 1)[1].strip()
    assert embedded == settings_markdown(), (
        "README settings table is stale: run scripts/readme_settings.py"
    )


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "patchwatch", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=ROOT,
        timeout=60,
    )


def test_config_command_prints_effective_values_masked() -> None:
    out = run_cli(
        "config",
        env={"PATCHWATCH_DATABASE_URL": "postgresql://u:topsecret@h/db", "PATCHWATCH_WORKERS": "7"},
    )
    assert out.returncode == 0, out.stderr
    assert "workers = 7" in out.stdout
    assert "topsecret" not in out.stdout + out.stderr
    assert re.search(r'^# database_url = "postgresql://u:\*+@h/db"', out.stdout, re.M)


def test_config_prints_toml_that_config_reads_back_unchanged(tmp_path: Path) -> None:
    """``patchwatch config > f.toml; patchwatch --config f.toml config`` prints the same,
    awkward values included; masked secrets stay with the environment that set them."""
    env = {
        "PATCHWATCH_DATA_DIR": str(tmp_path / 'd"a\\ta é\x7f'),
        "PATCHWATCH_WORKERS": "7",
        "PATCHWATCH_PROTOCOL1_NETWORKS": "10.0.0.0/8,192.168.0.0/16",
        "PATCHWATCH_PROCESS_INLINE": "no",
        "PATCHWATCH_CLIENT_READ_TIMEOUT_SECONDS": "2.5",
        "PATCHWATCH_DATABASE_URL": "postgresql://u:topsecret@h/db",
        "PATCHWATCH_METRICS_TOKEN": "m3tr1cs",
    }
    first = run_cli("config", "--help-table", env=env)
    assert first.returncode == 0, first.stderr
    assert "topsecret" not in first.stdout and "m3tr1cs" not in first.stdout
    conf = tmp_path / "patchwatch.toml"
    conf.write_text(first.stdout)
    parsed = tomllib.loads(first.stdout)  # valid TOML
    assert parsed["workers"] == 7 and parsed["process_inline"] is False
    assert parsed["data_dir"] == env["PATCHWATCH_DATA_DIR"]
    assert "metrics_token" not in parsed and "database_url" not in parsed
    again = run_cli("--config", str(conf), "config", "--help-table", env=env)
    assert again.returncode == 0 and again.stdout == first.stdout
    secrets = {k: v for k, v in env.items() if k.endswith(("_URL", "_TOKEN"))}
    alone = run_cli("--config", str(conf), "config", "--help-table", env=secrets)
    assert alone.stdout == first.stdout  # the file alone carries every other setting
    assert load_settings(secrets, str(conf)) == load_settings(env)


def test_config_command_bad_value_exits_2_without_traceback() -> None:
    out = run_cli("config", env={"PATCHWATCH_REPORTS_KEEP": "ten"})
    assert out.returncode == 2
    assert "reports_keep" in out.stderr
    assert "Traceback" not in out.stderr
