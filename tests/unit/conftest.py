"""What the unit tests of the store and of JobData share: a Redis of their own."""

import shutil
import tempfile

import pytest

from cameron.redis_server import EmbeddedRedis


@pytest.fixture(scope="module")
def redis_url():
    """A real redis-server for one test module, which its tests may empty as they like."""
    folder = tempfile.mkdtemp(prefix="cu", dir="/tmp")  # short: unix socket paths max ~100 chars
    server = EmbeddedRedis(folder).start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
