"""`engine.http`: requests to a real HTTP server on 127.0.0.1 that the tests start."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from builtin_steps import one_step
from locating import at

from engine.registry import JobRegistry
from engine.runners.http import BODY_START_CHARS

pytestmark = pytest.mark.timeout(60)


class Handler(BaseHTTPRequestHandler):
    """`/echo` answers the request as JSON; `/status/N` answers N with the text of `?body=`;
    `/text`, `/said-json` (a JSON content type on text that is not JSON), `/problem` (+json),
    `/big/N` (N with a 10,000-character body), `/slow` (answers once the test is over)."""

    server: Server

    def do_GET(self) -> None:
        self._answer()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _answer(self) -> None:
        url = urlsplit(self.path)
        size = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(size).decode()
        if url.path == "/echo":
            echo = {
                "method": self.command,
                "query": parse_qs(url.query),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
            self._send(200, "application/json", json.dumps(echo), {"X-Echo": "yes"})
        elif url.path.startswith("/status/"):
            text = parse_qs(url.query).get("body", [""])[0]
            self._send(int(url.path.rsplit("/", 1)[1]), "text/plain", text)
        elif url.path == "/text":
            self._send(200, "text/plain; charset=utf-8", "plain words")
        elif url.path == "/said-json":
            self._send(200, "application/json", "not json at all")
        elif url.path == "/problem":
            self._send(200, "application/problem+json", '{"title": "fine"}')
        elif url.path.startswith("/big/"):
            self._send(int(url.path.rsplit("/", 1)[1]), "text/plain", "x" * 10_000)
        elif url.path == "/slow":
            self.server.released.wait(30)
            self._send(200, "text/plain", "late")

    def _send(self, status: int, kind: str, text: str, headers: dict[str, str] | None = None):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    released = threading.Event()


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = Server(("127.0.0.1", 0), Handler)
    server.released = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.released.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def registry(registry: JobRegistry) -> JobRegistry:
    return registry.add_builtins()


@pytest.fixture
def http(sqlite_store, registry):
    """`http(**inputs)`: the one attempt of an `engine.http` step."""

    def request(**inputs):
        settings = {k: inputs.pop(k) for k in ("params",) if k in inputs}
        [attempt] = one_step(sqlite_store, registry, "engine.http", inputs, **settings).steps
        return attempt

    return request


def test_a_get_returns_status_headers_and_the_json_body(http, base):
    attempt = http(url=f"{base}/echo")
    assert attempt.status == "succeeded"
    result = attempt.result
    assert result["status"] == 200
    assert result["headers"]["x-echo"] == "yes"
    assert result["headers"]["content-type"] == "application/json"
    assert result["json"]["method"] == "GET" and result["json"]["body"] == ""
    assert "text" not in result


def test_headers_query_and_a_json_body_are_sent(http, base):
    attempt = http(
        method="post",
        url=f"{base}/echo?fixed=1",
        headers={"Authorization": "Bearer t0ken", "X-Count": 3},
        query={"day": "2026-11-26", "region": ["north", "south"], "limit": 10},
        json={"rows": [1, 2], "ok": True},
    )
    echo = attempt.result["json"]
    assert echo["method"] == "POST"
    assert echo["query"] == {
        "fixed": ["1"],
        "day": ["2026-11-26"],
        "region": ["north", "south"],
        "limit": ["10"],
    }
    assert echo["headers"]["authorization"] == "Bearer t0ken"
    assert echo["headers"]["x-count"] == "3"
    assert echo["headers"]["content-type"] == "application/json"
    assert json.loads(echo["body"]) == {"rows": [1, 2], "ok": True}


def test_a_body_is_sent_as_it_is(http, base):
    echo = http(method="PUT", url=f"{base}/echo", body="a,b\n1,2\n").result["json"]
    assert (echo["method"], echo["body"]) == ("PUT", "a,b\n1,2\n")


def test_a_body_that_is_not_json_comes_back_as_text(http, base):
    text = http(url=f"{base}/text").result
    assert text["text"] == "plain words" and "json" not in text
    said = http(url=f"{base}/said-json").result
    assert said["text"] == "not json at all" and "json" not in said
    assert http(url=f"{base}/problem").result["json"] == {"title": "fine"}


@pytest.mark.parametrize("status", [301, 404, 500])
def test_a_status_other_than_2xx_fails_with_the_status_and_the_start_of_the_body(
    http, base, status
):
    attempt = http(url=f"{base}/status/{status}?body=went+wrong")
    assert attempt.status == "failed"
    assert attempt.error.startswith(
        f"StepFailed: GET {base}/status/{status}?body=went+wrong answered {status} "
        "(expected a 2xx status): 'went wrong'"
    )


def test_the_body_in_the_error_is_bounded(http, base):
    attempt = http(url=f"{base}/big/502")
    head = attempt.error.split("\n")[0]
    assert "x" * BODY_START_CHARS + "… (9,500 more characters)" in head
    assert "x" * (BODY_START_CHARS + 1) not in head


def test_expect_status_says_which_statuses_succeed(http, base):
    assert http(url=f"{base}/status/404", expectStatus=404).result["status"] == 404
    assert http(url=f"{base}/status/201", expectStatus=[200, 201]).result["status"] == 201
    refused = http(url=f"{base}/status/200", expectStatus=[201, 202])
    assert refused.status == "failed" and "answered 200 (expected 201 or 202)" in refused.error


def test_no_answer_within_timeout_seconds_fails_saying_so(http, base):
    attempt = http(url=f"{base}/slow", timeoutSeconds=0.2)
    assert attempt.status == "failed"
    assert attempt.error.startswith(f"StepFailed: GET {base}/slow: no response within 0.2s")


def test_a_refused_connection_fails_naming_the_request(http):
    with socket.socket() as unused:  # bound, never listening
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/"
        attempt = http(url=url)
    assert attempt.status == "failed"
    assert attempt.error.startswith(f"StepFailed: GET {url}: ConnectError: ")


def test_a_templated_url_and_json_are_rendered_first(http, base):
    attempt = http(
        url="{{ params.base }}/echo",
        method="POST",
        json={"day": "{{ params.day }}"},
        params={"base": base, "day": "2026-11-26"},
    )
    assert json.loads(attempt.result["json"]["body"]) == {"day": "2026-11-26"}


def test_a_rendered_url_that_is_not_http_fails_the_attempt(http):
    attempt = http(url="{{ params.base }}/x", params={"base": "ftp://host"})
    assert attempt.status == "failed"
    assert attempt.error.startswith("InputsMismatch: inputs do not fit HttpInputs: url: ")


BAD = """\
name: bad
steps:
  - id: call
    runner: engine.http
    inputs:
      methd: POST
      url: https://example.com
  - id: both
    runner: engine.http
    inputs: {url: "https://example.com", json: {a: 1}, body: "a=1"}
  - id: code
    runner: engine.http
    inputs: {url: "https://example.com", expectStatus: [200, 999], timeoutSeconds: 0}
  - id: run
    runner: engine.shell
    inputs: {commnd: ls}
  - id: query
    runner: engine.sql
    inputs: {url: "sqlite://", query: "select 1", fetch: many}
"""


def test_engine_validate_locates_bad_literal_inputs_of_built_in_runners(tmp_path):
    (tmp_path / "bad.yaml").write_text(BAD)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("engine")), "validate", "bad.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr

    def line(needle: str, message: str, nth: int = 0) -> str:
        row, column = at(BAD, needle, nth)
        return f"bad.yaml:{row}:{column}: {message}"

    assert done.stderr.splitlines()[:-1] == [
        line("methd", "inputs: unknown key 'methd' for HttpInputs; did you mean 'method'?"),
        line('"a=1"', "inputs.body: Value error, give json or body, not both (HttpInputs)"),
        line(
            "999",
            "inputs.expectStatus.1: Input should be less than or equal to 599 (HttpInputs)",
        ),
        line("0}", "inputs.timeoutSeconds: Input should be greater than 0 (HttpInputs)"),
        line("{commnd", "inputs.command: Field required (ShellInputs)"),
        line("commnd", "inputs: unknown key 'commnd' for ShellInputs; did you mean 'command'?"),
        line("many", "inputs.fetch: Input should be 'all', 'one' or 'none' (SqlInputs)"),
    ]
