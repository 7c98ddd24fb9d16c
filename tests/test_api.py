"""The HTTP API (DESIGN §6) in process, through FastAPI's TestClient, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from api_client import SUM, Factory, Jobs, wait_for

from engine.definition import load_text
from engine.errors import ParamsError
from engine.registry import JobRegistry
from engine.service import BatchService
from engine.store import Store

ENGINE = str(Path(sys.executable).parent / "engine")


def test_a_run_is_accepted_at_once_and_runs_in_the_background(api: Factory) -> None:
    client = api()
    response = client.post("/batch/run", json={"definition": "sum", "params": {"a": 3}})
    assert response.status_code == 202
    accepted = response.json()
    assert accepted == {"instance_id": accepted["instance_id"], "status": "pending"}
    doc = wait_for(client, accepted["instance_id"], "succeeded")
    assert (doc["definition"], doc["trigger"], doc["params"]) == ("sum", "http", {"a": 3, "b": 2})
    assert [(s["step"], s["status"], s["result"]) for s in doc["steps"]] == [
        ("add", "succeeded", 5),
        ("double", "succeeded", 10),
    ]


def test_dry_run_returns_the_plan_and_creates_no_instance(api: Factory, store: Store) -> None:
    client = api()
    body = {"definition": "sum", "params": {"a": 1}}
    response = client.post("/batch/run?dry_run=true", json=body)
    assert response.status_code == 200
    plan = response.json()
    assert plan["params"] == {"a": 1, "b": 2}
    assert plan["order"] == ["add", "double"]
    assert plan["edges"] == [{"from": "add", "to": "double", "on": "success", "condition": None}]
    assert store.list_instances() == []


def test_refusals_404_and_422(api: Factory, store: Store, registry: JobRegistry) -> None:
    client = api()
    unknown = client.post("/batch/run", json={"definition": "nope"})
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "no definition named 'nope' is served"}

    bad = client.post("/batch/run", json={"definition": "sum", "params": {"a": "x", "c": 1}})
    assert bad.status_code == 422
    with pytest.raises(ParamsError) as cli_words:
        BatchService.prepare(load_text(SUM, "sum.yaml", registry), {"a": "x", "c": 1})
    assert [d["msg"] for d in bad.json()["detail"]] == cli_words.value.errors
    assert cli_words.value.errors == [
        "params.a: Input should be a valid integer, unable to parse string as an integer",
        "params.c: unknown param",
    ]
    assert client.post("/batch/run", json={"params": {}}).status_code == 422
    assert client.post("/batch/run", json={"definition": "sum", "x": 1}).status_code == 422
    assert store.list_instances() == []

    assert client.get("/batch/instances/999").status_code == 404
    assert client.get("/batch/instances/999").json() == {"detail": "no instance with id 999"}
    assert client.post("/batch/instances/999/resume").status_code == 404
    assert client.post("/batch/instances/999/cancel").status_code == 404
    assert client.get("/batch/instances/0").status_code == 422
    for beyond_the_columns in ("after=9223372036854775808", "attempt=2147483648"):
        assert client.get(f"/batch/instances/1/logs?{beyond_the_columns}").status_code == 422


def test_instance_json_is_what_runs_show_prints(api: Factory, store: Store) -> None:
    client = api()
    instance_id = client.post("/batch/run", json={"definition": "sum", "params": {"a": 1}}).json()[
        "instance_id"
    ]
    wait_for(client, instance_id, "succeeded")
    shown = subprocess.run(
        [ENGINE, "runs", "show", str(instance_id), "--json", "--db", store.url],
        capture_output=True,
        text=True,
        check=True,
    )
    assert client.get(f"/batch/instances/{instance_id}").json() == json.loads(shown.stdout)
    listed = subprocess.run(
        [ENGINE, "runs", "list", "--json", "--db", store.url],
        capture_output=True,
        text=True,
        check=True,
    )
    assert client.get("/batch/instances").json() == json.loads(listed.stdout)


def test_list_filters_as_the_cli(api: Factory, jobs: Jobs) -> None:
    client = api()
    jobs.fail = True
    ids = [
        client.post("/batch/run", json={"definition": d, "params": p}).json()["instance_id"]
        for d, p in [("sum", {"a": 1}), ("flaky", {}), ("sum", {"a": 2})]
    ]
    for instance_id in ids:
        wait_for(client, instance_id, "succeeded", "failed")
    everything = client.get("/batch/instances").json()
    assert [d["id"] for d in everything] == ids[::-1]
    assert all("steps" not in d for d in everything)
    assert [d["id"] for d in client.get("/batch/instances?definition=sum").json()] == [
        ids[2],
        ids[0],
    ]
    assert [d["id"] for d in client.get("/batch/instances?status=failed").json()] == [ids[1]]
    assert [d["id"] for d in client.get("/batch/instances?limit=1").json()] == [ids[2]]
    assert client.get("/batch/instances?status=lost").status_code == 422
    assert client.get("/batch/instances?limit=0").status_code == 422


def test_an_idempotency_key_gives_the_same_instance(api: Factory, store: Store) -> None:
    client = api()
    body = {"definition": "sum", "params": {"a": 4}}
    first = client.post("/batch/run", json=body, headers={"Idempotency-Key": "k-1"})
    again = client.post("/batch/run", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["instance_id"] == first.json()["instance_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(store.list_instances()) == 1

    for other in ({"definition": "sum", "params": {"a": 5}}, {"definition": "gate"}):
        refused = client.post("/batch/run", json=other, headers={"Idempotency-Key": "k-1"})
        assert refused.status_code == 422
        assert "idempotency key 'k-1' was used for instance" in refused.json()["detail"][0]["msg"]
    other_key = client.post("/batch/run", json=body, headers={"Idempotency-Key": "k-2"})
    assert other_key.json()["instance_id"] != first.json()["instance_id"]
    assert len(store.list_instances()) == 2


def test_racing_requests_with_one_key_create_one_instance(api: Factory, store: Store) -> None:
    client = api()
    barrier = threading.Barrier(8)
    ids: list[int] = []

    def post() -> None:
        barrier.wait()
        response = client.post(
            "/batch/run",
            json={"definition": "sum", "params": {"a": 1}},
            headers={"Idempotency-Key": "race"},
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["instance_id"])

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 8 and len(set(ids)) == 1
    assert len(store.list_instances()) == 1
    wait_for(client, ids[0], "succeeded")


def test_resume_claims_at_once_then_runs(api: Factory, jobs: Jobs) -> None:
    client = api()
    instance_id = client.post("/batch/run", json={"definition": "flaky"}).json()["instance_id"]
    wait_for(client, instance_id, "failed")
    jobs.fail = False
    resumed = client.post(f"/batch/instances/{instance_id}/resume")
    assert resumed.status_code == 202
    detail = f"instance {instance_id} resuming"
    assert resumed.json() == {"instance_id": instance_id, "detail": detail}
    doc = wait_for(client, instance_id, "succeeded")
    assert [(s["step"], s["attempt"], s["status"]) for s in doc["steps"]] == [
        ("first", 1, "succeeded"),
        ("maybe", 1, "failed"),
        ("maybe", 2, "succeeded"),
    ]
    refused = client.post(f"/batch/instances/{instance_id}/resume")
    assert refused.status_code == 409
    assert refused.json() == {"detail": f"instance {instance_id} succeeded: nothing to resume"}


def test_a_live_instance_is_not_resumed_twice(api: Factory, jobs: Jobs) -> None:
    client = api()
    instance_id = client.post("/batch/run", json={"definition": "gate"}).json()["instance_id"]
    assert jobs.entered.acquire(timeout=10)
    refused = client.post(f"/batch/instances/{instance_id}/resume")
    assert refused.status_code == 409 and "live process" in refused.json()["detail"]
    jobs.opened.set()
    wait_for(client, instance_id, "succeeded")


def test_cancel_stops_a_running_instance(api: Factory, jobs: Jobs) -> None:
    client = api()
    instance_id = client.post("/batch/run", json={"definition": "gate"}).json()["instance_id"]
    assert jobs.entered.acquire(timeout=10)
    response = client.post(f"/batch/instances/{instance_id}/cancel")
    assert response.status_code == 200
    assert "cancel requested" in response.json()["detail"]
    doc = wait_for(client, instance_id, "cancelled")
    assert [(s["step"], s["status"]) for s in doc["steps"]] == [("wait", "cancelled")]
    again = client.post(f"/batch/instances/{instance_id}/cancel").json()["detail"]
    assert again == f"instance {instance_id} already ended cancelled: nothing to cancel"


def test_instances_beyond_the_bound_wait_pending_and_can_be_cancelled(
    api: Factory, jobs: Jobs
) -> None:
    client = api(max_instances=2)
    ids = [
        client.post("/batch/run", json={"definition": "gate"}).json()["instance_id"]
        for _ in range(4)
    ]
    for _ in range(2):
        assert jobs.entered.acquire(timeout=10)
    assert not jobs.entered.acquire(timeout=0.3), "only two may run at once"
    statuses = [client.get(f"/batch/instances/{i}").json()["status"] for i in ids]
    assert statuses == ["running", "running", "pending", "pending"]
    health = {"status": "ok", "running": 2, "waiting": 2, "scheduler": None}
    assert client.get("/healthz").json() == health

    cancelled = client.post(f"/batch/instances/{ids[3]}/cancel").json()
    assert cancelled["detail"] == f"instance {ids[3]} cancelled"
    jobs.opened.set()
    for instance_id in ids[:3]:
        wait_for(client, instance_id, "succeeded")
    doc = client.get(f"/batch/instances/{ids[3]}").json()
    assert (doc["status"], doc["steps"]) == ("cancelled", []), "a cancelled waiter never runs"


def test_a_resumed_instance_waiting_for_a_slot_can_be_cancelled(api: Factory, jobs: Jobs) -> None:
    client = api(max_instances=1)
    flaky = client.post("/batch/run", json={"definition": "flaky"}).json()["instance_id"]
    wait_for(client, flaky, "failed")
    gate = client.post("/batch/run", json={"definition": "gate"}).json()["instance_id"]
    assert jobs.entered.acquire(timeout=10)
    assert client.post(f"/batch/instances/{flaky}/resume").status_code == 202
    assert client.get(f"/batch/instances/{flaky}").json()["status"] == "running"
    client.post(f"/batch/instances/{flaky}/cancel")
    assert client.get(f"/batch/instances/{flaky}").json()["status"] == "cancelled"
    jobs.opened.set()
    wait_for(client, gate, "succeeded")
    assert client.get("/healthz").json()["waiting"] == 0


def test_definitions(api: Factory) -> None:
    client = api()
    listed = client.get("/definitions").json()
    assert [d["name"] for d in listed] == ["flaky", "gate", "sum"]
    summary = listed[2]
    assert summary["steps"] == ["add", "double"]
    assert summary["params"]["a"] == {
        "type": "integer",
        "description": None,
        "default": None,
        "required": True,
        "enum": None,
        "secret": False,
    }
    assert summary["params"]["b"]["default"] == 2 and not summary["params"]["b"]["required"]
    detail = client.get("/definitions/sum").json()
    assert detail["source"] == SUM and detail["order"] == ["add", "double"]
    assert detail["steps"][1]["upstream"] == ["add"]
    assert client.get("/definitions/nope").status_code == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_healthz_answers_503_when_the_scheduler_completes_no_round(
    api: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("engine.health.STUCK_SECONDS", 0.2)

    def hang(runner: Any, stop: threading.Event, health: Any) -> None:
        stop.wait()

    client = api(scheduler=hang)
    assert client.get("/healthz").status_code == 200
    time.sleep(0.3)
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["status"] == "unhealthy"
    assert answer.json()["scheduler"] == {"alive": True, "last_round": None, "failing": []}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_openapi_and_docs(api: Factory) -> None:
    client = api()
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/healthz",
        "/batch/run",
        "/batch/instances",
        "/batch/instances/{instance_id}",
        "/batch/instances/{instance_id}/resume",
        "/batch/instances/{instance_id}/cancel",
        "/batch/instances/{instance_id}/logs",
        "/definitions",
        "/definitions/{name}",
    }
    run = schema["paths"]["/batch/run"]["post"]
    assert {"202", "200", "404", "422"} <= set(run["responses"])
    assert "401" not in run["responses"] and "security" not in run, "no token, no auth"
    assert "securitySchemes" not in schema["components"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_with_a_token_the_schema_says_bearer(api: Factory) -> None:
    schema = api(token="t").get("/openapi.json", headers={"Authorization": "Bearer t"}).json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    run = schema["paths"]["/batch/run"]["post"]
    assert run["security"] == [{"HTTPBearer": []}] and "401" in run["responses"]
    assert "security" not in schema["paths"]["/healthz"]["get"]
