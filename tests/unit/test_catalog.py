"""The process catalog file: a user writes config/processes/<env>.toml and Cameron reads it."""

import pytest

from cameron import catalog
from cameron.allow import AllowList, parse_rule
from cameron.catalog import Process
from cameron.config import ConfigError


def write(tmp_path, text, name="processes.toml", mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def load_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        catalog.load(path)
    return str(info.value)


# --- good files -------------------------------------------------------------

def test_a_catalog_with_two_processes_loads_with_their_settings(tmp_path):
    # Given a catalog with the sample process and one that sets its own timeouts
    path = write(tmp_path, """
# comments are fine
[processes.foo]
start = "http://127.0.0.1:9292/foo/v0.0.1/start"

[processes."billing.v2-beta_1"]
start = "https://billing.example.com/start"
connect_timeout = 2
read_timeout = 0.5
""")
    # When it is loaded
    processes = catalog.load(path)
    # Expect both processes, keyed by name; unset settings stay None, ints become floats;
    # with no allow list, each may call its start URL's host and port alone
    assert processes == {
        "foo": Process(name="foo", start_url="http://127.0.0.1:9292/foo/v0.0.1/start",
                       allow=AllowList("foo", (parse_rule("127.0.0.1:9292"),))),
        "billing.v2-beta_1": Process(name="billing.v2-beta_1",
                                     start_url="https://billing.example.com/start",
                                     connect_timeout=2.0, read_timeout=0.5,
                                     allow=AllowList("billing.v2-beta_1",
                                                     (parse_rule("billing.example.com:443"),))),
    }
    assert isinstance(processes["billing.v2-beta_1"].connect_timeout, float)


def test_an_empty_catalog_has_no_processes(tmp_path):
    # Given a file with only comments
    path = write(tmp_path, "# nothing yet\n")
    # When / Expect
    assert catalog.load(path) == {}


def test_the_shipped_catalogs_are_valid():
    # Given the catalogs under config/processes/ that ship with Cameron
    from cameron.config import ROOT
    for env in ("development", "test", "production"):
        # When each is loaded / Expect the sample foo process in it
        processes = catalog.load(str(ROOT / "config" / "processes" / f"{env}.toml"))
        assert processes["foo"].start_url.startswith("http://"), env


# --- bad files: each error names the file and what is wrong ------------------

def test_a_missing_file_is_reported_with_its_path(tmp_path):
    # Given a path where no file exists
    path = str(tmp_path / "nope.toml")
    # When it is loaded / Expect an error naming the path and saying the file is missing
    message = load_error(path)
    assert path in message
    assert "not found" in message


def test_a_folder_instead_of_a_file_is_reported_with_its_path(tmp_path):
    # Given a folder where the file should be
    folder = tmp_path / "processes.toml"
    folder.mkdir()
    # When / Expect a ConfigError (not a bare OSError) naming the path
    assert str(folder) in load_error(str(folder))


def test_bad_toml_is_reported_with_the_path_and_the_parser_error(tmp_path):
    # Given a file with a syntax error (an unterminated string) on line 2
    path = write(tmp_path, '[processes.foo]\nstart = "http://x/start\n')
    # When / Expect
    message = load_error(path)
    assert path in message
    assert "line 2" in message


def test_a_file_that_is_not_utf8_is_reported_as_a_config_error(tmp_path):
    # Given a catalog saved in Latin-1 (an é in a comment), which TOML forbids
    path = write(tmp_path, '# caf\xe9\n[processes.foo]\nstart = "http://x/s"\n'.encode("latin-1"),
                 mode="wb")
    # When it is loaded / Expect a ConfigError naming the file, like any other bad file
    assert path in load_error(path)


def test_an_unknown_top_level_key_is_refused(tmp_path):
    # Given a file with a typo'd table name
    path = write(tmp_path, '[process.foo]\nstart = "http://x/start"\n')
    # When / Expect the error names the file and the unknown entry
    message = load_error(path)
    assert path in message
    assert "'process'" in message


def test_processes_that_is_not_a_table_is_refused(tmp_path):
    path = write(tmp_path, 'processes = ["foo"]\n')
    message = load_error(path)
    assert path in message
    assert "processes" in message


@pytest.mark.parametrize("name", ["has space", "a/b", "x:y", "é", "a" * 101, ""])
def test_a_process_name_outside_the_allowed_characters_is_refused(tmp_path, name):
    # Given a process whose name cannot appear safely in URLs and Redis keys
    path = write(tmp_path, f'[processes."{name}"]\nstart = "http://x/start"\n')
    # When / Expect the error names the file and the bad name
    message = load_error(path)
    assert path in message
    assert repr(name) in message


def test_a_process_name_ending_in_a_newline_is_refused(tmp_path):
    # Given a quoted TOML key with a trailing newline escape: "foo\n"
    path = write(tmp_path, '[processes."foo\\n"]\nstart = "http://x/start"\n')
    # When / Expect it is refused like any other name with a control character
    message = load_error(path)
    assert path in message
    assert "process name" in message


def test_a_process_that_is_not_a_table_is_refused(tmp_path):
    path = write(tmp_path, '[processes]\nfoo = "http://x/start"\n')
    message = load_error(path)
    assert path in message
    assert "[processes.foo] must be a table" in message


@pytest.mark.parametrize("start_line", [
    "",                                  # missing
    'start = "ftp://x/start"',           # not http
    'start = "127.0.0.1:9292/start"',    # no scheme
    'start = "http://"',                 # no host
    "start = 42",                        # not a string
])
def test_a_process_needs_an_http_start_url(tmp_path, start_line):
    # Given a process without a usable start URL
    path = write(tmp_path, f"[processes.foo]\n{start_line}\nread_timeout = 1\n")
    # When / Expect the error names the file, the process and the start setting
    message = load_error(path)
    assert path in message
    assert "[processes.foo]" in message
    assert "start" in message


def test_an_unknown_setting_is_refused(tmp_path):
    # Given a typo in a setting name
    path = write(tmp_path, '[processes.foo]\nstart = "http://x/s"\nread_timout = 3\n')
    # When / Expect the error names the file and the unknown setting, and lists the known ones
    message = load_error(path)
    assert path in message
    assert "'read_timout'" in message
    assert "read_timeout" in message and "connect_timeout" in message


@pytest.mark.parametrize("value", ["0", "-1", "-0.5", '"5"', "true", "nan"])
def test_a_timeout_must_be_a_number_greater_than_zero(tmp_path, value):
    # Given a timeout that cannot work
    path = write(tmp_path, f'[processes.foo]\nstart = "http://x/s"\nconnect_timeout = {value}\n')
    # When / Expect
    message = load_error(path)
    assert path in message
    assert "connect_timeout must be a number greater than zero" in message


def test_parse_names_the_given_path_in_its_errors():
    # Given an already-parsed document with an error, and the path it came from
    doc = {"processes": {"foo": {"start": "gopher://x"}}}
    # When / Expect the path given to parse() is in the message
    with pytest.raises(ConfigError, match="/etc/cameron/prod.toml"):
        catalog.parse(doc, "/etc/cameron/prod.toml")


@pytest.mark.parametrize("url, ok", [
    ("http://a/b", True), ("https://a:1/b?c", True), ("HTTP://a/b", True),
    ("http:/a", False), ("file:///etc/passwd", False), (None, False), (b"http://a", False),
])
def test_is_http_url(url, ok):
    assert catalog.is_http_url(url) is ok


def test_retry_settings_are_read_per_process(tmp_path):
    path = write(tmp_path, '[processes.foo]\nstart = "http://x/s"\nmax_attempts = 5\n'
                           'retry_backoff = 0.25\nretry_backoff_max = 4\n')
    process = catalog.load(str(path))["foo"]
    assert (process.max_attempts, process.retry_backoff, process.retry_backoff_max) == (5, 0.25, 4.0)
    assert type(process.max_attempts) is int


@pytest.mark.parametrize("value", ["2.5", "0", "-1", "true", '"3"'])
def test_max_attempts_must_be_a_whole_number_above_zero(tmp_path, value):
    path = write(tmp_path, f'[processes.foo]\nstart = "http://x/s"\nmax_attempts = {value}\n')
    with pytest.raises(ConfigError) as info:
        catalog.load(str(path))
    assert "max_attempts must be" in str(info.value)


# --- environment variables in start URLs ---------------------------------------

def test_a_start_url_takes_environment_variables_with_defaults(tmp_path):
    # Given start URLs that name a port variable, with and without a default, and a literal $
    path = write(tmp_path, """
[processes.a]
start = "http://127.0.0.1:${FOO_PORT:-9292}/foo/v0.0.1/start"
[processes.b]
start = "http://${HOST}:80/x?price=$$5"
[processes.c]
start = "http://h:${EMPTY:-81}/"
""")
    # When it is loaded with the variables set (one of them empty)
    processes = catalog.load(path, {"FOO_PORT": "9400", "HOST": "acts.local", "EMPTY": ""})
    # Expect each replaced, an empty one by its default
    assert processes["a"].start_url == "http://127.0.0.1:9400/foo/v0.0.1/start"
    assert processes["b"].start_url == "http://acts.local:80/x?price=$5"
    assert processes["c"].start_url == "http://h:81/"
    # and the default when the variable is unset
    assert catalog.load(path, {"HOST": "h"})["a"].start_url == "http://127.0.0.1:9292/foo/v0.0.1/start"


def test_an_unset_variable_without_default_is_refused_naming_it(tmp_path):
    path = write(tmp_path, '[processes.a]\nstart = "http://${NOPE_HOST}/start"\n')
    with pytest.raises(ConfigError) as info:
        catalog.load(path, {})
    assert "[processes.a]" in str(info.value) and "${NOPE_HOST}" in str(info.value)
