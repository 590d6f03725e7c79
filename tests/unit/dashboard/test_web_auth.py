"""Auth and roles: no auth only on loopback; tokens, basic auth and a proxy's header; read-only is refused actions;
a cross-origin POST is refused; no credential is ever in an answer."""

from __future__ import annotations

import base64

import pytest
from starlette.testclient import TestClient

from taskfleet import App
from taskfleet.dashboard.settings import AuthSettings, DashboardSettings, is_loopback
from tests.unit.dashboard.conftest import (
    ADMIN_TOKEN,
    PASSWORD,
    READ_TOKEN,
    SAME_ORIGIN,
    SECRET_BROKER_PASSWORD,
    ClientFactory,
    auth_settings,
    bearer,
)


def basic(name: str, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "dashboard.example"])
def test_without_auth_serving_off_loopback_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="without auth"):
        DashboardSettings(host=host).check_exposure()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_without_auth_serving_on_loopback_is_allowed(host: str) -> None:
    assert is_loopback(host)
    DashboardSettings(host=host).check_exposure()


def test_with_a_token_serving_on_every_address_is_allowed() -> None:
    DashboardSettings(host="0.0.0.0", auth=AuthSettings(admin_token=ADMIN_TOKEN)).check_exposure()


def test_an_unknown_option_raises() -> None:
    with pytest.raises(TypeError):
        DashboardSettings(hots="0.0.0.0")  # type: ignore[call-arg]


def test_secrets_are_not_in_the_settings_repr() -> None:
    assert ADMIN_TOKEN not in repr(auth_settings())
    assert PASSWORD not in repr(auth_settings())


@pytest.mark.parametrize("path", ["/api/tasks", "/api/tasks/t0", "/api/workers", "/api/queues", "/api/stats"])
def test_the_api_without_credentials_is_401(make_client: ClientFactory, path: str) -> None:
    assert make_client(settings=auth_settings()).get(path).status_code == 401


def test_probes_and_the_openapi_document_need_no_credentials(make_client: ClientFactory) -> None:
    client = make_client(settings=auth_settings())
    assert client.get("/healthz").text == "ok"
    assert client.get("/api/openapi.json").status_code == 200


def test_a_page_without_credentials_sends_a_browser_to_the_login_form(make_client: ClientFactory) -> None:
    client = make_client(settings=DashboardSettings(host="0.0.0.0", auth=AuthSettings(admin_token=ADMIN_TOKEN)))
    response = client.get("/tasks", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


def test_a_page_with_basic_users_asks_for_basic_auth(make_client: ClientFactory) -> None:
    response = make_client(settings=auth_settings()).get("/tasks")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(("headers", "role"), [(bearer(ADMIN_TOKEN), "admin"), (bearer(READ_TOKEN), "read-only"),
                                               (basic("alice"), "admin"), (basic("bob"), "read-only")])
def test_tokens_and_basic_users_give_their_role(make_client: ClientFactory, headers: dict[str, str],
                                                role: str) -> None:
    assert make_client(settings=auth_settings()).get("/api/whoami", headers=headers).json()["role"] == role


@pytest.mark.parametrize("headers", [bearer("wrong-token-0123456789"), basic("alice", "nope"), basic("eve")])
def test_a_wrong_credential_is_401(make_client: ClientFactory, headers: dict[str, str]) -> None:
    assert make_client(settings=auth_settings()).get("/api/tasks", headers=headers).status_code == 401


def test_the_login_form_keeps_the_token_in_an_httponly_cookie(make_client: ClientFactory) -> None:
    client = make_client(settings=auth_settings())
    response = client.post("/login", data={"token": READ_TOKEN}, headers=SAME_ORIGIN, follow_redirects=False)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower()
    assert client.get("/api/whoami").json()["role"] == "read-only"


def test_the_login_form_refuses_a_wrong_token(make_client: ClientFactory) -> None:
    client = make_client(settings=auth_settings())
    assert client.post("/login", data={"token": "nope"}, headers=SAME_ORIGIN).status_code == 401


def test_a_proxys_user_header_is_trusted_with_its_groups(make_client: ClientFactory) -> None:
    settings = DashboardSettings(host="0.0.0.0", auth=AuthSettings(
        proxy_user_header="X-Forwarded-User", proxy_groups_header="X-Forwarded-Groups", proxy_admin_groups=("ops",)))
    client = make_client(settings=settings)
    assert client.get("/api/whoami").status_code == 401
    who = client.get("/api/whoami", headers={"X-Forwarded-User": "carol", "X-Forwarded-Groups": "dev, ops"}).json()
    assert (who["name"], who["role"]) == ("carol", "admin")
    who = client.get("/api/whoami", headers={"X-Forwarded-User": "dan", "X-Forwarded-Groups": "dev"}).json()
    assert who["role"] == "read-only"


ACTIONS = [("/api/actions/revoke", {"task_id": "t0"}), ("/api/actions/rate-limit", {"task_name": "tests.add"}),
           ("/api/actions/requeue", {"queue": "mail"}), ("/api/actions/purge", {"queue": "default",
                                                                                 "confirm": "default"}),
           ("/api/actions/pool-grow", {"n": 1}), ("/api/actions/pool-shrink", {"n": 1})]


@pytest.mark.parametrize(("path", "body"), ACTIONS)
def test_the_read_only_role_is_refused_every_action(make_client: ClientFactory, path: str,
                                                     body: dict[str, object]) -> None:
    client = make_client(settings=auth_settings())
    assert client.post(path, json=body, headers=bearer(READ_TOKEN)).status_code == 403
    assert client.post(path, json=body, headers=basic("bob") | SAME_ORIGIN).status_code == 403


@pytest.mark.parametrize(("path", "body"), ACTIONS)
def test_the_admin_role_may_act(make_client: ClientFactory, path: str, body: dict[str, object]) -> None:
    client = make_client(settings=auth_settings())
    response = client.post(path, json=body, headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True


def test_a_cross_origin_post_is_refused_even_for_an_admin(make_client: ClientFactory, fleet_app: App) -> None:
    client = make_client(settings=auth_settings())
    evil = basic("alice") | {"Origin": "https://evil.example"}
    assert client.post("/api/actions/purge", json={"queue": "default", "confirm": "default"},
                       headers=evil).status_code == 403
    assert fleet_app.broker.queue_depth("default").ready == 1


def test_a_post_without_origin_or_referer_is_refused_unless_it_carries_a_bearer_token(
        make_client: ClientFactory) -> None:
    client = make_client(settings=auth_settings())
    assert client.post("/api/actions/pool-grow", json={"n": 1}, headers=basic("alice")).status_code == 403
    referer = basic("alice") | {"Referer": "http://127.0.0.1/actions"}
    assert client.post("/api/actions/pool-grow", json={"n": 1}, headers=referer).status_code == 200


def test_without_auth_on_loopback_a_cross_origin_post_is_refused_too(client: TestClient) -> None:
    response = client.post("/api/actions/revoke", json={"task_id": "t0"}, headers={"Origin": "http://evil.example"})
    assert response.status_code == 403


@pytest.mark.parametrize("path", ["/", "/queues", "/queues?dead=mail", "/workers", "/tasks", "/tasks/t0",
                                  "/autoscaling", "/actions", "/api/queues", "/api/workers", "/api/tasks",
                                  "/api/whoami", "/api/openapi.json"])
def test_no_credential_appears_in_any_answer(make_client: ClientFactory, fleet_app: App, path: str) -> None:
    fleet_app.configure(broker=f"memory://user:{SECRET_BROKER_PASSWORD}@localhost/0")
    client = make_client(settings=auth_settings())
    text = client.get(path, headers=bearer(ADMIN_TOKEN)).text
    for secret in (ADMIN_TOKEN, READ_TOKEN, PASSWORD, SECRET_BROKER_PASSWORD):
        assert secret not in text


def test_without_auth_a_foreign_host_name_is_refused_against_dns_rebinding(make_client: ClientFactory) -> None:
    client = make_client(base_url="http://evil.example")
    assert client.get("/api/tasks").status_code == 403
    assert make_client(base_url="http://localhost:5555").get("/api/tasks").status_code == 200
