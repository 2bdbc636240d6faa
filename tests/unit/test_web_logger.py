"""The API server's gunicorn logger: an access line is made only when its logger keeps it."""

import logging

from gunicorn.config import Config

from cameron.web_worker import Logger


def test_an_access_line_is_made_only_when_the_access_logger_keeps_it(monkeypatch):
    # Given gunicorn taking access logging as on (a logging config of ours, as config/gunicorn.py)
    cfg = Config()
    cfg.set("logconfig_dict", {"version": 1, "disable_existing_loggers": False})
    log = Logger(cfg)
    formatted = []
    monkeypatch.setattr(log, "atoms", lambda *a: formatted.append(a) or {})
    # When its access logger is at WARNING (our default), expect no line made
    log.access_log.setLevel(logging.WARNING)
    log.access(None, None, {}, None)
    assert formatted == []
    # and when a user sets it to INFO, the line is made
    log.access_log.setLevel(logging.INFO)
    log.access(None, None, {}, None)
    assert len(formatted) == 1
