"""The CLI's own calls to Redis give up after redis_timeout, as the API's do, not after the
Redis client's usual 5 s."""

import socket
import time

import pytest

from cameron import cli, cli_jobs
from cameron.config import Config
from cameron.gateway import EngineUnavailable


@pytest.fixture
def stalled_redis():
    """A Redis that accepts connections and never answers, as a stalled (SIGSTOPped) one does:
    the kernel completes the connection, nothing reads it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}"


def timed(call, error):
    began = time.monotonic()
    with pytest.raises(error) as raised:
        call()
    return raised.value, time.monotonic() - began


def test_the_check_that_redis_answers_gives_up_after_redis_timeout(stalled_redis):
    error, took = timed(lambda: cli._check_redis(Config(redis_url=stalled_redis, redis_timeout=0.3)), cli.Fail)
    assert took < 2, took
    assert "cannot reach Redis" in str(error)


def test_a_job_id_prefix_lookup_gives_up_after_redis_timeout(stalled_redis):
    config = Config(redis_url=stalled_redis, redis_timeout=0.3)
    error, took = timed(lambda: cli_jobs.job_ref("abcdef12", config), EngineUnavailable)
    assert took < 2, took
    assert "Redis" in str(error)
