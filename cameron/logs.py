"""The log format every Cameron process writes (actors, gunicorn, CLI), and where it goes."""

import logging
import os
import stat
import sys
import time

#: One line per record; `job=` carries the job's uuid on every line about a job (pass
#: `extra={"job": uuid}`), `-` on the others, so `grep job=<uuid>` follows one job.
FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] job=%(job)s: %(message)s"
#: syslog stamps the time and host itself.
SYSLOG_FORMAT = "cameron %(name)s[%(process)d] %(levelname)s job=%(job)s: %(message)s"


class JobFormatter(logging.Formatter):
    """The house format, in UTC like the job times in Redis."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def format(self, record):
        if not hasattr(record, "job"):
            record.job = "-"
        return super().format(record)


def syslog_address(setting: str):
    """`/dev/log` (a unix socket) or `host:port` (UDP) as SysLogHandler takes it."""
    if setting.startswith("/"):
        return setting
    host, _, port = setting.rpartition(":")
    return [host or "localhost", int(port)]


def log_config(config, *, extra_loggers: dict | None = None) -> dict:
    """A logging.dictConfig for `config`: stderr (which `cameron start` points at its log file)
    and, when `log_syslog` is set, syslog."""
    # The level is on the handlers too: Thespian's logger process hands actors' records
    # straight to the handlers, past the loggers' own levels.
    handlers = {"stderr": {"class": "logging.StreamHandler", "formatter": "cameron",
                           "stream": "ext://sys.stderr", "level": config.log_level}}
    problem = check_syslog(config.log_syslog)
    if problem:
        # A host without /dev/log (a container) must still start: gunicorn run by a service
        # unit gets here without the CLI's check, and a handler without its socket would print
        # a traceback for every record.
        print(f"warning: {problem}; logging without syslog", file=sys.stderr, flush=True)
    elif config.log_syslog:
        handlers["syslog"] = {"class": "logging.handlers.SysLogHandler", "formatter": "syslog",
                              "address": syslog_address(config.log_syslog), "level": config.log_level}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"cameron": {"()": "cameron.logs.JobFormatter", "fmt": FORMAT},
                       "syslog": {"()": "cameron.logs.JobFormatter", "fmt": SYSLOG_FORMAT}},
        "handlers": handlers,
        "root": {"handlers": list(handlers), "level": config.log_level},
        "loggers": extra_loggers or {},
    }


def check_syslog(setting: str) -> str | None:
    """Why the syslog setting cannot work here, or None."""
    if not setting:
        return None
    if setting.startswith("/"):
        try:
            if not stat.S_ISSOCK(os.stat(setting).st_mode):
                return f"log_syslog={setting!r} is not a socket"
        except OSError as e:
            return f"log_syslog={setting!r}: {e.strerror}"
        return None
    host, sep, port = setting.rpartition(":")
    if not sep or not port.isdigit():
        return f"log_syslog={setting!r}: expected a socket path (/dev/log) or host:port"
    return None
