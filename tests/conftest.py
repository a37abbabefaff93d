"""Shared fixtures for the test suite.

The engine fixtures build tiny random-init Hugging Face checkpoints once per session (GPT-2 and
Llama, each with a perturbed "fine-tuned" twin) and load each pair once: interventions always
restore the models, so sharing them across tests is safe (and is itself tested).
"""

from __future__ import annotations

import email.utils
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
from hypothesis import settings

# In-process pytester runs restore sys.modules afterwards. `datasets` (imported by transformer_lens)
# registers pyarrow extension types when first imported, which pyarrow refuses twice per process:
# imported here, before any inner run, it is never imported (and dropped) inside one.
try:
    import datasets  # noqa: F401
except ImportError:  # an environment without datasets has nothing to register
    pass

pytest_plugins = ["pytester"]

# CI must be reproducible: under CI=true hypothesis replays the same examples every run
# (derandomize); locally it keeps exploring new ones. `--hypothesis-profile` overrides either.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ARCHS = ("gpt2", "llama")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "writes_invalid_reports: the test writes broken mechtests-report/2 files on "
                                       "purpose (exempt from the schema check of every report the tests produce)")


@pytest.fixture(autouse=True)
def _every_report_matches_the_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, validate every ``mechtests-report/2`` file it left in its temporary
    directories (JSON reports, baselines: in-process and subprocess runs alike) against the JSON
    Schema the package ships."""
    yield
    if request.node.get_closest_marker("writes_invalid_reports"):
        return
    roots = [value.path if name == "pytester" else value for name, value in request.node.funcargs.items()
             if name in ("tmp_path", "pytester")]
    if not roots:
        return
    from mechtests.report import check_report

    for root in roots:
        for path in Path(root).rglob("*.json"):
            with path.open("rb") as fh:
                head = fh.read(64)
            if b'"schema": "mechtests-report/2"' not in head:
                continue
            try:
                check_report(json.loads(path.read_text()))
            except ValueError as exc:
                pytest.fail(f"{path} breaks the shipped report schema: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """``{arch: (base_dir, tuned_dir)}`` tiny checkpoints (2 layers, d_model 32, d_mlp 64, n_ctx 64)."""
    from mechtests.testing import make_tiny_checkpoint, perturbed_copy

    root = tmp_path_factory.mktemp("engine-ckpts")
    out: dict[str, tuple[Path, Path]] = {}
    for arch in ARCHS:
        base = make_tiny_checkpoint(root / f"{arch}-base", arch=arch, seed=0)
        tuned = perturbed_copy(base, root / f"{arch}-tuned", scale=0.05, seed=1)
        out[arch] = (base, tuned)
    return out


@pytest.fixture(scope="session")
def tiny_pairs(tiny_checkpoints: dict[str, tuple[Path, Path]]) -> dict[str, object]:
    """``{arch: ModelPair}`` loaded once per session."""
    from mechtests.models import load_pair

    return {arch: load_pair(base, tuned, name=f"tiny-{arch}") for arch, (base, tuned) in tiny_checkpoints.items()}


@pytest.fixture(params=ARCHS)
def tiny_pair(request: pytest.FixtureRequest, tiny_pairs: dict[str, object]) -> object:
    """The tiny pair of each architecture (standard GPT-2 MLP, gated Llama MLP)."""
    return tiny_pairs[request.param]


# ---------------------------------------------------------------- a local Perspective server


class PerspectiveServer:
    """State of a local server that speaks the Perspective ``comments:analyze`` shape.

    ``script`` is a list of answers handed out one per request before normal ones: ``"429"``
    (Retry-After in seconds), ``"429-date"`` (Retry-After as an HTTP date), ``"500"``,
    ``"403"`` (echoing the key in its body), ``"badjson"``, ``"slow"`` (answers after 1 s).
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.keys: list[str] = []
        self.queries: list[str] = []
        self.script: list[str] = []
        self.attribute_scores: dict[str, float] = {}
        self.refuse: set[str] = set()  # texts answered with HTTP 403 (echoing the key)
        self.lock = threading.Lock()


@pytest.fixture()
def perspective() -> Iterator[tuple[str, PerspectiveServer]]:
    """``(url, state)`` of a Perspective stand-in on 127.0.0.1, started and stopped by the test."""
    state = PerspectiveServer()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            url = urlparse(self.path)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if url.path != "/v1alpha1/comments:analyze":
                self.send_error(404)
                return
            with state.lock:
                state.requests.append(body)
                state.keys.append(self.headers.get("X-Goog-Api-Key", ""))
                state.queries.append(url.query)
                step = state.script.pop(0) if state.script else "ok"
                if body["comment"]["text"] in state.refuse:
                    step = "403"
            if step == "429":
                return self._send(429, b'{"error": {"code": 429}}', {"Retry-After": "0.25"})
            if step == "429-date":
                when = email.utils.formatdate(time.time() + 3, usegmt=True)
                return self._send(429, b'{"error": {"code": 429}}', {"Retry-After": when})
            if step in ("500", "403"):
                return self._send(int(step), b'{"error": {"message": "key ' + state.keys[-1].encode() + b' refused"}}')
            if step == "badjson":
                return self._send(200, b"<html>proxy error</html>")
            if step == "slow":
                time.sleep(1.0)
            scores = {a: {"summaryScore": {"value": state.attribute_scores.get(a, 0.1), "type": "PROBABILITY"}}
                      for a in body["requestedAttributes"]}
            self._send(200, json.dumps({"attributeScores": scores, "languages": ["en"]}).encode(),
                       {"Content-Type": "application/json"})

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
