"""A bounded schemathesis run against the real stack: requests generated from the served
OpenAPI document, valid and not, must get only answers the document declares, and no 5xx."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import another_api_server, stop_web

pytestmark = pytest.mark.stack

CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance"]


def fuzz(base_url: str, cwd: Path, examples: int, *options: str):
    # Checks on requests (whether the server refuses each invalid one) are left out: sizes are
    # limited in UTF-8 bytes, which JSON Schema cannot say, so the document cannot be exact there.
    run = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{base_url}/api/openapi.json",
         "--checks", ",".join(CHECKS), "--max-examples", str(examples), "--seed", "12", "--workers", "1",
         "--request-timeout", "10", "--generation-database", "none", "--no-color",
         "--phases", "examples,coverage,fuzzing", *options,
         # A stream that lasts until the client goes cannot be answered within a request's
         # timeout; test_stack_events.py tests its answers.
         "--exclude-path", "/api/events"],
        cwd=cwd, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_generated_requests_get_only_the_answers_the_document_declares(engine, tmp_path):
    fuzz(engine.base_url, tmp_path, 60)


def test_with_tokens_on_generated_requests_too(engine, tmp_path):
    with another_api_server(engine, tmp_path, CAMERON_API_TOKENS="fuzz:fuzz-token") as server:
        fuzz(server.base_url, tmp_path, 15, "--header", "Authorization: Bearer fuzz-token")
        stop_web(server)
