"""What the HTTP API refuses before a route runs (a token, a Host or Origin, a body that is not
JSON or too large) and what it leaves out of its answers (tracebacks)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest
from api_client import Factory, Jobs, wait_for

from engine.store import Store


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_body_not_json_is_400_and_one_not_sent_as_json_is_415(api: Factory, store: Store) -> None:
    client = api()
    json_type = {"Content-Type": "application/json"}
    broken = client.post(
        "/batch/run", content=b'{"definition": "sum",\n "params": }', headers=json_type
    )
    assert broken.status_code == 400
    assert broken.json() == {
        "detail": "the body is not valid JSON: Expecting value: line 2 column 12 (char 33)"
    }
    not_utf8 = client.post("/batch/run", content=b'{"definition": "\xff"}', headers=json_type)
    assert not_utf8.status_code == 400

    body = b'{"definition": "sum", "params": {"a": 1}}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        refused = client.post("/batch/run", content=body, headers=headers)
        assert refused.status_code == 415, content_type
        assert refused.json() == {
            "detail": "send the body as JSON, with Content-Type: application/json"
        }
    assert (
        client.post("/batch/run", content=b"{", headers={"Content-Type": "text/plain"}).status_code
        == 415
    )
    assert store.list_instances() == []

    for content_type in (
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.engine+json",
    ):
        accepted = client.post("/batch/run", content=body, headers={"Content-Type": content_type})
        assert accepted.status_code == 202, content_type
    not_an_object = client.post("/batch/run", content=b"[1]", headers=json_type)
    assert not_an_object.status_code == 422 and not_an_object.json()["detail"][0]["loc"] == ["body"]
    assert client.post("/batch/run", headers=json_type).status_code == 422, "no body at all"
    assert (
        client.post(
            "/batch/instances/999/cancel", headers={"Content-Type": "text/plain"}
        ).status_code
        == 404
    ), "a route without a body ignores the content type"


def test_step_errors_come_without_their_traceback(api: Factory, store: Store) -> None:
    client = api()
    instance_id = client.post("/batch/run", json={"definition": "flaky"}).json()["instance_id"]
    doc = wait_for(client, instance_id, "failed")
    assert [s["error"] for s in doc["steps"]] == [None, "RuntimeError: not yet"]
    stored = store.get_instance(instance_id).steps
    assert stored is not None and stored[1].error is not None
    assert stored[1].error.startswith("RuntimeError: not yet\n\nTraceback (most recent call")
    runners_file = inspect.getsourcefile(Jobs)
    assert runners_file is not None and runners_file in stored[1].error, "the database keeps it"

    shown = api(tracebacks=True).get(f"/batch/instances/{instance_id}").json()
    assert shown["steps"][1]["error"] == stored[1].error


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_token_guards_every_route_but_healthz(api: Factory) -> None:
    client = api(token="s3cret")
    assert client.get("/healthz").status_code == 200
    for method, path in [
        ("get", "/batch/instances"),
        ("get", "/batch/instances/1"),
        ("post", "/batch/run"),
        ("post", "/batch/instances/1/resume"),
        ("post", "/batch/instances/1/cancel"),
        ("get", "/definitions"),
        ("get", "/definitions/sum"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"] == "Bearer"
    for path in ("/openapi.json", "/docs"):
        assert client.get(path).status_code == 401, f"{path} needs the token too"
    good = {"Authorization": "Bearer s3cret"}
    assert client.get("/definitions", headers=good).status_code == 200
    run = client.post("/batch/run", json={"definition": "sum", "params": {"a": 1}}, headers=good)
    assert run.status_code == 202


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_a_token_only_loopback_hosts_and_origins_are_answered(
    api: Factory, jobs: Jobs
) -> None:
    client = api()
    for host in (
        "localhost",
        "LOCALHOST:8000",
        "127.0.0.1",
        "127.0.0.1:1",
        "[::1]",
        "[::1]:80",
        "testserver:443",
    ):
        assert client.get("/definitions", headers={"Host": host}).status_code == 200, host
    for host in (
        "evil.example",
        "evil.example:8000",
        "localhost.evil.example",
        "127.0.0.2",
        "[::2]:8000",
        "localhost@evil.example",
        "",
        "[::1",
        "localhost:x",
    ):
        refused = client.get("/definitions", headers={"Host": host})
        assert refused.status_code == 421, host
        assert "set ENGINE_API_TOKEN to serve other names" in refused.json()["detail"]
    rebound = client.post(
        "/batch/run",
        json={"definition": "sum", "params": {"a": 1}},
        headers={"Host": "evil.example:8000"},
    )
    assert rebound.status_code == 421, "a page served from another domain starts nothing"
    assert client.get("/healthz", headers={"Host": "lb.internal"}).status_code == 200

    instance_id = client.post("/batch/run", json={"definition": "gate"}).json()["instance_id"]
    for origin in ("http://evil.example", "https://localhost.evil.example", "null", "file://"):
        forged = client.post(f"/batch/instances/{instance_id}/cancel", headers={"Origin": origin})
        assert forged.status_code == 403, origin
        assert forged.json()["detail"].startswith(f"refused for a page of {origin!r}")
    assert client.get(f"/batch/instances/{instance_id}").json()["status"] != "cancelled"
    for origin in ("http://localhost:3000", "http://127.0.0.1:8000", "http://[::1]"):
        page = client.get("/definitions", headers={"Origin": origin})
        assert page.status_code == 200, origin

    with_token = api(token="t")
    answered = with_token.get(
        "/definitions",
        headers={
            "Host": "api.example",
            "Origin": "https://ui.example",
            "Authorization": "Bearer t",
        },
    )
    assert answered.status_code == 200, "with a token, any Host and any Origin"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_large_body_is_refused_with_413(api: Factory, store: Store) -> None:
    client = api()
    big = {"definition": "sum", "params": {"a": 1, "pad": "x" * (1024 * 1024)}}
    response = client.post("/batch/run", json=big)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 1048576 bytes"}

    def chunks() -> Iterator[bytes]:
        yield b'{"definition": "sum", "params": {"pad": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}}'

    streamed = client.post(
        "/batch/run", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert store.list_instances() == []
