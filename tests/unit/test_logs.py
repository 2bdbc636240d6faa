"""Where the log goes: the house format on stderr, and syslog when log_syslog is set."""

import logging
import logging.config
import socket

from cameron import logs
from cameron.config import Config


def test_with_log_syslog_set_lines_reach_a_syslog_server_in_the_house_format():
    # Given a syslog server listening on UDP
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        config = Config(log_syslog=f"127.0.0.1:{server.getsockname()[1]}")
        # When the engine's logging is configured from the settings and a job line is logged
        root = logging.getLogger()
        saved = root.handlers[:], root.level
        logging.config.dictConfig(logs.log_config(config))
        try:
            logging.getLogger("cameron.runner").warning("cancelled", extra={"job": "ab" * 16})
            line = server.recv(4096).decode()
        finally:
            for handler in root.handlers:
                handler.close()
            root.handlers[:], level = saved
            root.setLevel(level)
    # Expect the line with its job id
    assert "cameron cameron.runner[" in line and f"job={'ab' * 16}: cancelled" in line


def test_a_syslog_setting_that_cannot_work_is_explained():
    assert logs.check_syslog("") is None
    assert logs.check_syslog("syslog.example.com:514") is None
    assert "expected a socket path" in logs.check_syslog("syslog.example.com")
    assert "No such file" in logs.check_syslog("/nonexistent/log")
    assert "is not a socket" in logs.check_syslog("/etc/hostname")
