"""``taskfleet dashboard``: its flags and environment become settings; secrets come from the environment only;
without auth it refuses to serve off loopback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from taskfleet.cli import build_parser
from taskfleet.cli.console import CommandFailed
from taskfleet.cli.dashboard_command import (
    ENV_ADMIN_TOKEN,
    ENV_USERS,
    duration_s,
    history_path,
    parse_users,
    retention_s,
    run,
    settings_from_args,
)

TOKEN = "admin-token-0123456789"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser(load={"dashboard"}).parse_args(["dashboard", "--app-name", "demo", *argv])


def test_flags_and_environment_make_the_settings() -> None:
    args = parse("--host", "0.0.0.0", "--port", "8080", "--url-prefix", "/taskfleet/", "--trust-proxy-headers")
    settings = settings_from_args(args, {ENV_ADMIN_TOKEN: TOKEN, ENV_USERS: "alice:admin:pa:ss, bob:read-only:x"})
    assert (settings.host, settings.port, settings.url_prefix) == ("0.0.0.0", 8080, "/taskfleet")
    assert settings.trust_forwarded_headers
    assert settings.auth.admin_token == TOKEN
    assert [(u.name, u.role, u.password) for u in settings.auth.basic_users] == [("alice", "admin", "pa:ss"),
                                                                                ("bob", "read-only", "x")]


def test_without_auth_off_loopback_the_command_refuses_to_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("--host", "0.0.0.0", "--broker", "memory://"), {}) == 1
    assert "without auth" in capsys.readouterr().err


def test_a_bad_user_entry_is_refused() -> None:
    with pytest.raises(CommandFailed):
        parse_users("alice:admin")


def test_a_user_with_an_unknown_role_is_refused() -> None:
    with pytest.raises(CommandFailed, match="unknown role"):
        settings_from_args(parse(), {ENV_USERS: "alice:root:pw"})


def test_tokens_are_not_command_line_flags() -> None:
    with pytest.raises(SystemExit):
        parse("--admin-token", TOKEN)


@pytest.mark.parametrize(("text", "seconds"), [("3600", 3600.0), ("90m", 5400.0), ("12h", 43200.0),
                                               ("7d", 604800.0), ("2w", 1209600.0)])
def test_durations_read_with_their_unit(text: str, seconds: float) -> None:
    assert duration_s(text) == seconds


def test_retention_days_as_the_chart_passes_it() -> None:
    assert retention_s(parse("--retention-days", "2")) == 172800.0
    assert retention_s(parse()) == 7 * 86400.0


def test_the_history_file_defaults_to_the_xdg_data_dir(tmp_path: Path) -> None:
    path = history_path(parse(), {"XDG_DATA_HOME": str(tmp_path)}, "billing/app")
    assert path == tmp_path / "taskfleet" / "dashboard-billing_app.sqlite3"
    assert history_path(parse("--history", "h.db"), {}, "x") == Path("h.db")


def test_kube_flags_as_the_chart_passes_them() -> None:
    args = parse("--kube-namespace", "a", "--kube-namespace", "b")
    assert args.namespaces == ["a", "b"]
    assert parse("--kube-all-namespaces").kube


def test_the_command_serves_the_app_over_its_history_file_and_stops_the_ingester(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    from taskfleet.dashboard.history import ingester
    from taskfleet.dashboard.web import server

    served: list[int] = []
    stopped: list[bool] = []

    def fake_serve(web: object, *, settings: object) -> None:
        served.append(TestClient(web, base_url="http://127.0.0.1").get("/api/tasks").status_code)  # type: ignore[arg-type]

    real_stop = ingester.Ingester.stop

    def stop(self: ingester.Ingester, timeout: float = 10.0) -> bool:
        stopped.append(True)
        return real_stop(self, timeout)

    monkeypatch.setattr(server, "serve", fake_serve)
    monkeypatch.setattr(ingester.Ingester, "stop", stop)
    history = tmp_path / "history.sqlite3"
    args = parse("--broker", f"sqlite:///{tmp_path / 'broker.db'}", "--history", str(history), "--retention", "1d")
    assert run(args, {}) == 0
    assert served == [200]
    assert stopped == [True]
    assert history.exists()
