"""The examples of docs/writing-activities.md run as written: each example activity server
(Python standard library, Falcon, Node.js) serves the `greet` workflow to a real engine,
whose catalog reaches them through environment variables."""

import shutil
import socket
import subprocess
import sys
import time

import pytest

from cameron.config import ROOT
from conftest import free_port, start_engine, stop_engine

pytestmark = pytest.mark.stack

EXAMPLES = ROOT / "docs" / "examples"
SERVERS = {
    "greet_stdlib": [sys.executable, str(EXAMPLES / "stdlib_activity.py")],
    "greet_falcon": [sys.executable, str(EXAMPLES / "falcon_activity.py")],
    "greet_node": ["node", str(EXAMPLES / "node_activity.js")],
}


def _serving(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def docs_engine(short_tmp, redis_server, activities):
    ports, procs = {}, []
    try:
        for name, argv in SERVERS.items():
            if shutil.which(argv[0]) is None:
                continue  # Node.js absent: its test skips
            ports[name] = free_port()
            procs.append(subprocess.Popen([*argv, str(ports[name])], stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 20
        while not all(_serving(p) for p in ports.values()):
            assert time.monotonic() < deadline, "an example activity server did not start"
            assert all(p.poll() is None for p in procs), "an example activity server exited"
            time.sleep(0.05)
        catalog = short_tmp / "docs-processes.toml"
        # As the guide says: the catalog names the servers' ports through variables.
        catalog.write_text("".join(
            f'[processes.{name}]\nstart = "http://127.0.0.1:${{{name.upper()}_PORT}}/greet"\n'
            for name in ports))
        engine, web = start_engine(short_tmp / "docs", redis_server.url, activities,
                                   CAMERON_PROCESSES=str(catalog),
                                   **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()})
        try:
            yield engine, ports
        finally:
            stop_engine(engine, web)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.parametrize("process", list(SERVERS))
def test_each_example_runs_the_greet_workflow(docs_engine, process):
    engine, ports = docs_engine
    if process not in ports:
        pytest.skip(f"{SERVERS[process][0]} is not installed")
    # Given the guide's workflow, started with JSON data
    doc = engine.run_job(process, data={"name": "Ada"})
    # Expect both tasks done with the guide's answers
    assert [(t["name"], t["status"]["current"]) for t in doc["tasks"]] == [("start", "done"), ("shout", "done")]
    assert doc["tasks"][0]["data"] == {"greeting": "hello Ada"}
    assert doc["tasks"][1]["data"] == {"loud": "HELLO ADA", "after": "greet"}


def test_the_guide_quotes_the_examples_as_they_are():
    # The code blocks of the guide are excerpts of the files the test above runs: a change
    # to one without the other fails here.
    import re
    guide = (ROOT / "docs" / "writing-activities.md").read_text()
    sources = [p.read_text() for p in EXAMPLES.iterdir() if p.suffix in (".py", ".js")]
    blocks = re.findall(r"```(?:python|js)\n(.*?)```", guide, re.S)
    assert len(blocks) == 3
    for block in blocks:
        assert any(block in source for source in sources), block
