"""Allow lists, URL and name checks, and call signatures, as plain values."""

import logging
import pickle

import pytest

from cameron import actorsys, catalog
from cameron.activity import signature, signature_problem
from cameron.allow import AllowList, name_problem, parse_rule, url_problem
from cameron.config import ConfigError, from_env


def allow(*entries, process="p"):
    return AllowList(process, tuple(parse_rule(e) for e in entries))


def engine_ports():
    return {8080, 19500}


@pytest.mark.parametrize("entries, host, port, ip, allowed", [
    (["127.0.0.1:9292"], "127.0.0.1", 9292, "127.0.0.1", True),
    (["127.0.0.1:9292"], "127.0.0.1", 9293, "127.0.0.1", False),
    (["127.0.0.1:9292"], "localhost", 9292, "127.0.0.1", True),  # the address connected to counts
    (["localhost:9292"], "LocalHost", 9292, "127.0.0.1", True),
    (["localhost:9292"], "evil.example", 9292, "127.0.0.1", False),
    (["*.svc.example:443"], "a.svc.example", 443, "10.1.2.3", True),
    (["*.svc.example:443"], "svc.example", 443, "10.1.2.3", False),
    (["*.svc.example:443"], "a.svc.example", 80, "10.1.2.3", False),
    # a name under a pattern that resolves to this machine does not reach it
    (["*.svc.example:443"], "a.svc.example", 443, "127.0.0.1", False),
    (["*:443"], "anything.example", 443, "203.0.113.9", True),
    (["*:443"], "anything.example", 443, "127.0.0.1", False),
    (["10.0.0.0/8:*"], "h", 5000, "10.9.8.7", True),
    (["10.0.0.0/8:*"], "h", 5000, "::ffff:10.9.8.7", True),
    (["10.0.0.0/8:*"], "h", 5000, "11.0.0.1", False),
    (["[::1]:80"], "ip6-localhost", 80, "::1", True),
    (["127.0.0.1:9292"], "h", 9292, "::ffff:127.0.0.1", True),
])
def test_an_allow_list_is_checked_against_the_address_connected_to(entries, host, port, ip, allowed):
    problem = allow(*entries).check(host, port, ip, engine_ports)
    assert (problem is None) is allowed, problem


def test_the_engines_own_ports_are_refused_unless_listed_exactly():
    pattern = allow("127.0.0.0/8:*", process="foo")
    assert "is one of the engine's own ports" in pattern.check("localhost", 19500, "127.0.0.1", engine_ports)
    assert "allow list of process foo names it exactly" in pattern.check("x", 8080, "127.0.0.1", engine_ports)
    assert pattern.check("x", 9000, "127.0.0.1", engine_ports) is None
    assert allow("127.0.0.1:8080").check("x", 8080, "127.0.0.1", engine_ports) is None
    assert allow("localhost:8080").check("localhost", 8080, "127.0.0.1", engine_ports) is None


def test_engine_ports_are_looked_up_only_when_a_pattern_reaches_this_machine():
    asked = []

    def ports():
        asked.append(1)
        return set()
    allow("127.0.0.1:9292").check("127.0.0.1", 9292, "127.0.0.1", ports)
    allow("*.example:443").check("a.example", 443, "203.0.113.1", ports)
    assert asked == []
    allow("127.0.0.1:*").check("127.0.0.1", 9292, "127.0.0.1", ports)
    assert asked == [1]


def test_a_refusal_names_the_process_and_the_target():
    assert allow("127.0.0.1:9292", process="foo").check("h", 25, "192.0.2.1", engine_ports) == \
        "h:25 (192.0.2.1) is not in the allow list of process foo"


def test_an_allow_list_crosses_a_pickle_unchanged_and_unparsed(monkeypatch):
    # Given an allow list with a network, a name pattern and an address
    allow = AllowList("pickled", tuple(parse_rule(e) for e in ["10.0.0.0/8:*", "*.example.com:443", "[::1]:8080"]))
    parsed = []
    monkeypatch.setattr("cameron.allow.parse_rule", lambda text: parsed.append(text) or parse_rule(text))
    # When it is pickled and unpickled many times (a runner's batches of calls)
    copies = [pickle.loads(pickle.dumps(allow, protocol=pickle.HIGHEST_PROTOCOL)) for _ in range(50)]
    # Expect an equal list that checks alike, its entries parsed once in all
    assert all(c == allow for c in copies)
    assert copies[0].check("a.example.com", 443, "192.0.2.1", lambda: ()) is None
    assert copies[0].check("a.example.com", 80, "192.0.2.1", lambda: ()) is not None
    assert len(parsed) == 3


@pytest.mark.parametrize("entry, words", [
    ("127.0.0.1", "must be \"host:port\""), ("h:0", "port must be"), ("h:x", "port must be"),
    ("a.*.example:80", "wildcard may only start"), ("*x.example:80", "wildcard may only start"),
    ("h :80", "must be"), (":80", "must be"),
])
def test_a_bad_allow_entry_is_refused_saying_why(entry, words):
    with pytest.raises(ValueError, match=words):
        parse_rule(entry)


@pytest.mark.parametrize("url, problem", [
    ("http://h/a", None), ("https://h:8443/a?b=c", None), ("http://h/café", None),
    ("http://h/a b", "whitespace"), ("http://h/a\r\nX: y", "control"), ("http://h/\x7f", "control"),
    ("http://u:p@h/a", "credentials"), ("http://u@h/a", "credentials"),
    ("http://h:99999/a", "port"), ("http://h:x/a", "port"),
    ("ftp://h/a", "not an http(s) URL"), ("http:///a", "not an http(s) URL"), (42, "not a string"),
])
def test_url_problems(url, problem):
    found = url_problem(url)
    assert (found is None) if problem is None else (problem in found), found


@pytest.mark.parametrize("name, problem", [
    ("act_1", None), ("dots.and:colons", None), ("ümlaut", None),
    ("", "non-empty"), ("a\nb", "control"), ("a\x00", "control"), ("x" * 257, "longer than 256"),
])
def test_name_problems(name, problem):
    found = name_problem(name)
    assert (found is None) if problem is None else (problem in found), found


def test_a_signature_verifies_for_its_body_and_key_only_while_fresh():
    body = b'{"job": "j"}'
    header = signature(b"k", body, now=1_000_000)
    assert header.startswith("t=1000000,v1=")
    assert signature_problem(b"k", header, body, now=1_000_100) is None
    assert signature_problem(b"k", header, body + b" ", now=1_000_100) == "bad signature"
    assert signature_problem(b"other", header, body, now=1_000_100) == "bad signature"
    assert signature_problem(b"k", header, body, now=1_000_301) == "signature too old"
    assert signature_problem(b"k", None, body) == "no X-Cameron-Signature"
    assert signature_problem(b"k", "t=x,v1=y", body) == "no X-Cameron-Signature"


def test_a_process_without_a_list_takes_the_engines_then_its_start_url(tmp_path):
    doc = {"processes": {"own": {"start": "http://a.example/s", "allow": ["a.example:80", "b.example:80"]},
                         "plain": {"start": "https://c.example/s"}}}
    assert [r.text for r in catalog.parse(doc)["own"].allow.rules] == ["a.example:80", "b.example:80"]
    assert [r.text for r in catalog.parse(doc)["plain"].allow.rules] == ["c.example:443"]
    engine_wide = catalog.parse(doc, default_allow="*.svc:443,10.0.0.0/8:*")
    assert [r.text for r in engine_wide["plain"].allow.rules] == ["*.svc:443", "10.0.0.0/8:*"]
    assert [r.text for r in engine_wide["own"].allow.rules] == ["a.example:80", "b.example:80"]


@pytest.mark.parametrize("entry, words", [
    ('allow = "h:80"', "non-empty list"), ("allow = []", "non-empty list"),
    ('allow = ["h"]', "[processes.p] allow: allow entry 'h'"),
    ('start = "http://u:p@h/s"', "start holds credentials"),
])
def test_a_bad_catalog_allow_list_or_start_url_stops_loading(tmp_path, entry, words):
    lines = ['[processes.p]', entry if entry.startswith("start") else 'start = "http://h/s"']
    if not entry.startswith("start"):
        lines.append(entry)
    path = tmp_path / "c.toml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        catalog.load(str(path))


def test_the_engine_wide_allow_setting_is_checked_at_start(tmp_path):
    assert from_env({"CAMERON_ALLOW": "*.svc:443, 127.0.0.1:9292".replace(" ", "")}).allow
    with pytest.raises(ConfigError, match="CAMERON_ALLOW"):
        from_env({"CAMERON_ALLOW": "nohost"})
    settings = tmp_path / "s.toml"
    settings.write_text('allow = ["a.example:80", "b.example:443"]\n')
    assert from_env({"CAMERON_CONFIG": str(settings)}).allow == "a.example:80,b.example:443"


def test_the_signing_key_stays_out_of_the_settings_repr():
    assert "s3cret" not in repr(from_env({"CAMERON_SIGNING_KEY": "s3cret"}))


def test_listening_beyond_loopback_is_warned_about_naming_the_risk(caplog):
    log = logging.getLogger("t")
    with caplog.at_level(logging.WARNING):
        actorsys.warn_if_exposed(log, "the actor system", "127.0.0.1")
        actorsys.warn_if_exposed(log, "the API", "localhost")
        assert caplog.records == []
        actorsys.warn_if_exposed(log, "the actor system", "0.0.0.0")
    [record] = caplog.records
    assert "0.0.0.0" in record.getMessage() and "run code as this user" in record.getMessage()


def test_the_readmes_signature_check_accepts_cameron_calls_and_refuses_others():
    # The few lines the README gives activities, run as they stand there.
    from cameron.config import ROOT
    readme = (ROOT / "README.md").read_text()
    code = readme.split("def signed_by_cameron", 1)[1].split("```", 1)[0]
    scope = {}
    exec("import hashlib, hmac, time\ndef signed_by_cameron" + code, scope)
    check = scope["signed_by_cameron"]
    body = b'{"job": "j", "data": 1}'
    assert check(b"k", signature(b"k", body), body)
    assert not check(b"k", signature(b"k", body), body + b" ")
    assert not check(b"other", signature(b"k", body), body)
    assert not check(b"k", signature(b"k", body, now=1_000_000), body)  # replayed, years later
    assert not check(b"k", None, body)
