"""Settings from the environment: what an operator gets by exporting CAMERON_* variables."""

import re

import pytest

from cameron.config import ROOT, Config, ConfigError, from_env
from cameron.redis_server import EmbeddedRedis


def config_error(environ) -> str:
    with pytest.raises(ConfigError) as info:
        from_env(environ)
    return str(info.value)


def test_an_empty_environment_gives_the_documented_defaults():
    # Given no CAMERON_* variable / When the settings are read
    config = from_env({})
    # Expect the development catalog, the embedded Redis and the documented defaults
    assert config.env == "development"
    assert config.processes_file == str(ROOT / "config" / "processes" / "development.toml")
    assert config.redis_url == ""
    assert config.data_dir == str(ROOT / ".cameron")
    assert (config.bind, config.port, config.admin_port) == ("127.0.0.1", 8080, 19500)
    assert (config.connect_timeout, config.read_timeout) == (5.0, 30.0)
    assert config.runners > 0 and config.web_workers > 0 and config.web_connections > 0
    assert config.max_fanout > 0 and config.max_depth > 0 and config.max_response_bytes > 0


def test_from_env_reads_os_environ_when_given_nothing(monkeypatch):
    # Given the variable exported in the real environment
    monkeypatch.setenv("CAMERON_PORT", "8181")
    # When / Expect
    assert from_env().port == 8181


@pytest.mark.parametrize("env", ["development", "test", "production"])
def test_cameron_env_picks_the_catalog_of_that_environment(env):
    config = from_env({"CAMERON_ENV": env})
    assert config.env == env
    assert config.processes_file == str(ROOT / "config" / "processes" / f"{env}.toml")


@pytest.mark.parametrize("env", ["prod", "Production", "staging"])
def test_an_unknown_cameron_env_is_refused_naming_the_choices(env):
    # Given a mistyped environment name / When / Expect the error quotes it and lists the choices
    message = config_error({"CAMERON_ENV": env})
    assert f"CAMERON_ENV={env!r}" in message
    assert "development, test, production" in message


def test_cameron_processes_overrides_the_catalog_file():
    # Given both an environment and an explicit catalog file
    config = from_env({"CAMERON_ENV": "production", "CAMERON_PROCESSES": "/srv/cameron/mine.toml"})
    # Expect the explicit file wins and the environment is still production
    assert config.processes_file == "/srv/cameron/mine.toml"
    assert config.env == "production"


def test_an_empty_cameron_processes_falls_back_to_the_environment_catalog():
    config = from_env({"CAMERON_ENV": "test", "CAMERON_PROCESSES": ""})
    assert config.processes_file == str(ROOT / "config" / "processes" / "test.toml")


def test_numbers_are_parsed_into_their_types():
    # Given every numeric knob set
    config = from_env({
        "CAMERON_PORT": "9000", "CAMERON_ADMIN_PORT": "19600", "CAMERON_RUNNERS": "4",
        "CAMERON_WEB_WORKERS": "3", "CAMERON_WEB_CONNECTIONS": "16", "CAMERON_MAX_FANOUT": "50",
        "CAMERON_MAX_DEPTH": "7", "CAMERON_MAX_RESPONSE_BYTES": "2048",
        "CAMERON_CONNECT_TIMEOUT": "0.25", "CAMERON_READ_TIMEOUT": "2", "CAMERON_ASK_TIMEOUT": "1.5",
    })
    # Expect each one, ints as ints and timeouts as floats
    assert (config.port, config.admin_port, config.runners) == (9000, 19600, 4)
    assert (config.web_workers, config.web_connections) == (3, 16)
    assert (config.max_fanout, config.max_depth, config.max_response_bytes) == (50, 7, 2048)
    assert (config.connect_timeout, config.read_timeout, config.ask_timeout) == (0.25, 2.0, 1.5)
    assert type(config.port) is int and type(config.read_timeout) is float


def test_string_knobs_are_taken_as_given():
    config = from_env({"CAMERON_BIND": "0.0.0.0", "CAMERON_DATA_DIR": "/var/lib/cameron",
                       "CAMERON_REDIS_URL": "redis://db:6379/2"})
    assert (config.bind, config.data_dir, config.redis_url) == (
        "0.0.0.0", "/var/lib/cameron", "redis://db:6379/2")


def test_an_empty_variable_means_the_default():
    # Given variables exported but empty (as `export CAMERON_PORT=` does)
    config = from_env({"CAMERON_PORT": "", "CAMERON_READ_TIMEOUT": "", "CAMERON_BIND": ""})
    # Expect the defaults rather than an error
    assert (config.port, config.read_timeout, config.bind) == (8080, 30.0, "127.0.0.1")


@pytest.mark.parametrize("var, value", [
    ("CAMERON_PORT", "eighty"), ("CAMERON_PORT", "80.5"), ("CAMERON_RUNNERS", "2x"),
    ("CAMERON_MAX_RESPONSE_BYTES", "10MB"),
])
def test_a_non_integer_is_refused_naming_the_variable(var, value):
    message = config_error({var: value})
    assert f"{var}={value!r}" in message
    assert "expected a whole number" in message


@pytest.mark.parametrize("var, value", [
    ("CAMERON_READ_TIMEOUT", "30s"), ("CAMERON_CONNECT_TIMEOUT", "five"), ("CAMERON_ASK_TIMEOUT", "1,5"),
])
def test_a_non_number_timeout_is_refused_naming_the_variable(var, value):
    message = config_error({var: value})
    assert f"{var}={value!r}" in message
    assert "expected a number" in message


@pytest.mark.parametrize("var, value", [
    ("CAMERON_PORT", "0"), ("CAMERON_RUNNERS", "-1"), ("CAMERON_WEB_CONNECTIONS", "0"),
    ("CAMERON_MAX_FANOUT", "0"), ("CAMERON_READ_TIMEOUT", "0"), ("CAMERON_CONNECT_TIMEOUT", "-0.5"),
    ("CAMERON_ASK_TIMEOUT", "0.0"),
])
def test_zero_or_negative_values_are_refused(var, value):
    message = config_error({var: value})
    assert f"{var}={value!r}" in message
    assert "greater than zero" in message


def test_a_timeout_that_is_not_a_number_at_all_is_refused():
    # Given float("nan"), which parses but compares false to everything
    message = config_error({"CAMERON_READ_TIMEOUT": "nan"})
    assert "CAMERON_READ_TIMEOUT" in message


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://db.example.com:6380",
                                 "unix:///run/redis/redis.sock"])
def test_a_redis_url_with_a_known_scheme_is_accepted(url):
    config = from_env({"CAMERON_REDIS_URL": url})
    assert config.redis_url == url
    assert config.effective_redis_url == url


@pytest.mark.parametrize("url", ["localhost:6379", "http://localhost:6379", "/run/redis.sock"])
def test_a_redis_url_with_another_scheme_is_refused(url):
    message = config_error({"CAMERON_REDIS_URL": url})
    assert f"CAMERON_REDIS_URL={url!r}" in message
    assert "redis://" in message and "unix://" in message


def test_without_a_redis_url_the_engine_uses_the_embedded_socket_under_the_data_dir():
    # Given no CAMERON_REDIS_URL and an absolute data folder
    config = from_env({"CAMERON_DATA_DIR": "/var/lib/cameron"})
    # Expect a unix:// URL to the socket the embedded Redis listens on
    assert config.redis_socket == "/var/lib/cameron/redis/redis.sock"
    assert config.effective_redis_url == "unix:///var/lib/cameron/redis/redis.sock"
    assert config.effective_redis_url == EmbeddedRedis("/var/lib/cameron").url


def test_a_relative_data_dir_still_points_the_engine_at_the_embedded_socket(tmp_path, monkeypatch):
    # Given CAMERON_DATA_DIR relative to the current folder
    monkeypatch.chdir(tmp_path)
    config = from_env({"CAMERON_DATA_DIR": "data"})
    # Expect the URL the actors connect to is the one the embedded Redis listens on
    from redis.connection import parse_url
    assert parse_url(config.effective_redis_url)["path"] == str(tmp_path / "data" / "redis" / "redis.sock")


def test_with_changes_one_setting_and_keeps_the_rest():
    base = from_env({"CAMERON_PORT": "9000"})
    changed = base.with_(read_timeout=1.0)
    assert changed.read_timeout == 1.0 and changed.port == 9000
    assert base.read_timeout == 30.0  # the original is untouched (frozen)
    assert isinstance(changed, Config)


# --- the settings file per environment -----------------------------------------------

def test_each_environment_has_a_settings_file_that_loads():
    for env in ("development", "test", "production"):
        config = from_env({"CAMERON_ENV": env})
        assert config.config_file == str(ROOT / "config" / f"{env}.toml")
    assert from_env({"CAMERON_ENV": "production"}).job_retention > 0


def test_the_environment_overrides_the_file(tmp_path):
    settings = tmp_path / "mine.toml"
    settings.write_text('port = 9100\nread_timeout = 3\njob_retention = 60\ndata_dir = "/srv/c"\n')
    config = from_env({"CAMERON_CONFIG": str(settings), "CAMERON_PORT": "9200"})
    assert (config.port, config.read_timeout, config.job_retention) == (9200, 3.0, 60)
    assert config.data_dir == "/srv/c" and config.config_file == str(settings)


@pytest.mark.parametrize("text, words", [
    ("prot = 80\n", "unknown setting 'prot'"),
    ('port = "80"\n', "port = '80': expected a whole number"),
    ("port = 0\n", "must be greater than zero"),
    ("job_retention = -1\n", "must be zero or more"),
    ('log_level = "LOUD"\n', "expected one of DEBUG"),
    ("port = [\n", "settings file"),
])
def test_a_bad_settings_file_is_refused_naming_the_file_and_setting(tmp_path, text, words):
    settings = tmp_path / "bad.toml"
    settings.write_text(text)
    message = config_error({"CAMERON_CONFIG": str(settings)})
    assert str(settings) in message and words in message


def test_a_missing_settings_file_named_by_cameron_config_is_refused():
    assert "file not found" in config_error({"CAMERON_CONFIG": "/nonexistent/cameron.toml"})


def test_log_lines_carry_the_job_id_or_a_dash():
    import logging
    from cameron.logs import FORMAT, JobFormatter
    formatter = JobFormatter(FORMAT)
    about_a_job = logging.makeLogRecord({"name": "cameron.runner", "levelname": "INFO", "msg": "cancelled",
                                         "job": "0123456789abcdef0123456789abcdef"})
    other = logging.makeLogRecord({"name": "cameron.api", "levelname": "INFO", "msg": "hello"})
    assert "cameron.runner[" in formatter.format(about_a_job)
    assert "job=0123456789abcdef0123456789abcdef: cancelled" in formatter.format(about_a_job)
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO cameron.api\[\d+\] job=-: hello$",
                     formatter.format(other))


def test_development_toml_lists_every_setting_with_its_default():
    # Given the development settings file, which the README says lists every setting
    from cameron.config import SETTINGS, _read_file
    listed = _read_file(ROOT / "config" / "development.toml")
    # Expect every setting in it, each with the built-in default (paths resolved)
    assert set(listed) == set(SETTINGS)
    for name, value in listed.items():
        if name not in ("data_dir", "processes_file"):
            assert value == getattr(Config(), name), name


def test_an_empty_variable_switches_a_setting_off_over_the_file(tmp_path):
    # Given a settings file that turns syslog and retention on
    conf = tmp_path / "s.toml"
    conf.write_text('log_syslog = "/dev/log"\njob_retention = 60\nredis_url = "redis://db:6379/0"\n')
    # When their variables are exported empty
    config = from_env({"CAMERON_CONFIG": str(conf), "CAMERON_LOG_SYSLOG": "",
                       "CAMERON_JOB_RETENTION": "", "CAMERON_REDIS_URL": ""})
    # Expect each one off: back to the built-in default
    assert (config.log_syslog, config.job_retention, config.redis_url) == ("", 0, "")


def test_the_cli_finds_the_running_engine_through_its_record_and_variables_still_win(tmp_path):
    from cameron.config import record_file, remove_record, write_record
    # Given an engine started with its own ports and Redis, which recorded them in its data folder
    started = from_env({"CAMERON_DATA_DIR": str(tmp_path), "CAMERON_ADMIN_PORT": "23456",
                        "CAMERON_PORT": "8111", "CAMERON_REDIS_URL": "redis://db:6379/3",
                        "CAMERON_ENV": "test"})
    write_record(started, pid=1)
    assert record_file(str(tmp_path)).exists()
    # When a shell with only the data folder reads the settings as the CLI does
    found = from_env({"CAMERON_DATA_DIR": str(tmp_path)}, recorded=True)
    # Expect the engine's own settings
    assert (found.env, found.admin_port, found.port, found.redis_url) == ("test", 23456, 8111, "redis://db:6379/3")
    # and an explicit variable to win over the record
    assert from_env({"CAMERON_DATA_DIR": str(tmp_path), "CAMERON_PORT": "9999"}, recorded=True).port == 9999
    # and nothing of it when not asked for (what starting an engine does), or once it is removed
    assert from_env({"CAMERON_DATA_DIR": str(tmp_path)}).admin_port == 19500
    remove_record(started)
    assert from_env({"CAMERON_DATA_DIR": str(tmp_path)}, recorded=True).admin_port == 19500


def test_a_redis_password_is_hidden_wherever_the_url_is_shown():
    from cameron.config import redact_url
    assert redact_url("redis://:s3cret@db:6379/0") == "redis://:***@db:6379/0"
    assert redact_url("rediss://cameron:p@ss@db:6380/0?ssl_ca_certs=/ca") == "rediss://cameron:***@db:6380/0?ssl_ca_certs=/ca"
    assert redact_url("redis://db:6379/0") == "redis://db:6379/0"
    assert redact_url("unix:///var/lib/cameron/redis/redis.sock") == "unix:///var/lib/cameron/redis/redis.sock"


def test_the_public_url_defaults_to_where_the_api_listens():
    assert from_env({}).api_url == "http://127.0.0.1:8080"
    assert from_env({"CAMERON_BIND": "0.0.0.0", "CAMERON_PORT": "9000"}).api_url == "http://127.0.0.1:9000"
    assert from_env({"CAMERON_PUBLIC_URL": "https://jobs.example/cameron/"}).api_url == \
        "https://jobs.example/cameron"


@pytest.mark.parametrize("url", ["jobs.example", "ftp://jobs.example", "https://", "http://h/?a=1", "http://h/#x"])
def test_a_public_url_that_is_not_an_http_address_is_refused(url):
    assert "CAMERON_PUBLIC_URL" in config_error({"CAMERON_PUBLIC_URL": url})


def test_api_tokens_are_named_and_never_shown():
    config = from_env({"CAMERON_API_TOKENS": " alice:tok-a , tok-b,bob:x:y "})
    assert config.tokens["alice"] == "tok-a" and config.tokens["bob"] == "x:y"
    assert "tok-b" in config.tokens.values() and len(config.tokens) == 3
    assert "tok-a" not in repr(config)


@pytest.mark.parametrize("tokens", ["alice:", ":secret", "alice:a,alice:b", "has space", "tök"])
def test_bad_api_tokens_are_refused_without_quoting_them(tokens):
    message = config_error({"CAMERON_API_TOKENS": tokens})
    assert "CAMERON_API_TOKENS" in message
    assert "secret" not in message and "tök" not in message


def test_a_key_limit_past_what_a_request_line_holds_is_refused():
    assert "at most 2048" in config_error({"CAMERON_MAX_KEY_BYTES": "2049"})
    assert from_env({"CAMERON_MAX_KEY_BYTES": "2048"}).max_key_bytes == 2048
