"""The activity protocol: what Cameron sends to an activity and how it checks the answer."""

import itertools
import json
import socket
import struct
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from cameron import activity, activity_blocking
from cameron.activity import ActivityError, ActivityResult, Definition, RetryPolicy, parse_answer
from cameron.activity_loop import Call
from cameron.activity_server import ActivityServer
from bench.stack import free_port
from cameron.allow import AllowList, parse_rule
from test_activity_loop import RawServer, ok, run

LIMITS = dict(connect_timeout=2.0, read_timeout=5.0, max_bytes=1024 * 1024, max_fanout=100)
BODY = {"job": "0123456789abcdef0123456789abcdef", "key": "(id,007)",
        "data": "be careful with that data", "requestor": "bob_the_thin"}


def bad_answer(raw, max_fanout=10) -> str:
    if isinstance(raw, (dict, list)):
        raw = json.dumps(raw)
    if isinstance(raw, str):
        raw = raw.encode()
    with pytest.raises(ActivityError) as info:
        parse_answer(raw, max_fanout=max_fanout)
    return str(info.value)


# --- parse_answer: good answers ---------------------------------------------

def test_an_answer_with_next_activities_lists_their_definitions():
    # Given the sample start activity's kind of answer
    nxt = {"definitions": [{"name": "act_1", "url": "http://h/act_1"},
                           {"name": "act_2", "url": "https://h/act_2", "extra": "ignored"}]}
    raw = json.dumps({"name": "whois", "data": {"who_id": "(id,007)"}, "next_activities": nxt,
                      "something_else": True}).encode()
    # When / Expect
    result = parse_answer(raw, max_fanout=10)
    assert result == ActivityResult(name="whois", data={"who_id": "(id,007)"}, next_activities=nxt,
                                    definitions=(Definition("act_1", "http://h/act_1"),
                                                 Definition("act_2", "https://h/act_2")))


def test_an_answer_without_next_activities_is_a_leaf():
    result = parse_answer(b'{"name": "foo_act_1", "data": [1, 2, 3]}', max_fanout=10)
    assert result == ActivityResult(name="foo_act_1", data=[1, 2, 3], next_activities=None, definitions=())


@pytest.mark.parametrize("data", [None, 0, "", [], {}, False])
def test_any_json_value_is_acceptable_data(data):
    result = parse_answer(json.dumps({"name": "n", "data": data}).encode(), max_fanout=10)
    assert result.data == data
    assert result.definitions == ()


def test_next_activities_with_no_definitions_has_no_successors():
    result = parse_answer(b'{"name": "n", "data": 1, "next_activities": {}}', max_fanout=10)
    assert result.definitions == ()
    assert result.next_activities == {}


def test_exactly_the_fanout_limit_is_allowed():
    defs = [{"name": f"a{i}", "url": f"http://h/{i}"} for i in range(3)]
    result = parse_answer(json.dumps({"name": "n", "data": 1, "next_activities": {"definitions": defs}})
                          .encode(), max_fanout=3)
    assert len(result.definitions) == 3


# --- parse_answer: bad answers, each saying what is wrong ---------------------

@pytest.mark.parametrize("raw", [b"this is not JSON", b"", b'{"name": "x", "data": ', b"\xff\xfe\x00garbage"])
def test_an_answer_that_is_not_json_is_refused(raw):
    message = bad_answer(raw)
    assert "not JSON" in message


def test_the_not_json_message_quotes_the_start_of_the_answer():
    message = bad_answer(b"<html>Bad Gateway</html>")
    assert "<html>Bad Gateway" in message


@pytest.mark.parametrize("raw, kind", [(["a", "list"], "list"), ('"text"', "str"), ("42", "int"),
                                       ("null", "NoneType")])
def test_an_answer_that_is_not_an_object_is_refused(raw, kind):
    message = bad_answer(raw)
    assert "must be a JSON object" in message
    assert kind in message


@pytest.mark.parametrize("answer", [{"data": 1}, {"name": "", "data": 1}, {"name": 7, "data": 1},
                                    {"name": None, "data": 1}])
def test_an_answer_without_a_name_string_is_refused(answer):
    assert "'name'" in bad_answer(answer)


def test_an_answer_without_data_is_refused():
    assert "'data'" in bad_answer({"name": "n"})


@pytest.mark.parametrize("nxt", [[], "act_1", 1, [{"name": "a", "url": "http://h/a"}]])
def test_next_activities_that_is_not_an_object_is_refused(nxt):
    message = bad_answer({"name": "n", "data": 1, "next_activities": nxt})
    assert "'next_activities' must be an object" in message


@pytest.mark.parametrize("defs", [{"name": "a", "url": "http://h/a"}, "http://h/a", None, 3])
def test_definitions_that_is_not_a_list_is_refused(defs):
    message = bad_answer({"name": "n", "data": 1, "next_activities": {"definitions": defs}})
    assert "'definitions' list" in message


@pytest.mark.parametrize("definition", [{"url": "http://h/a"}, {"name": "", "url": "http://h/a"},
                                        {"name": 3, "url": "http://h/a"}, "act_1", None])
def test_a_definition_without_a_name_is_refused_naming_its_position(definition):
    defs = [{"name": "ok", "url": "http://h/ok"}, definition]
    message = bad_answer({"name": "n", "data": 1, "next_activities": {"definitions": defs}})
    assert "definitions[1]" in message
    assert "'name'" in message


@pytest.mark.parametrize("url", [None, "", "h/act", "ftp://h/act", "http://", 42])
def test_a_definition_without_an_http_url_is_refused_naming_its_position(url):
    definition = {"name": "act"} if url is None else {"name": "act", "url": url}
    message = bad_answer({"name": "n", "data": 1, "next_activities": {"definitions": [definition]}})
    assert "definitions[0]" in message
    assert "'url'" in message


def test_more_next_activities_than_the_fanout_limit_is_refused(client):
    defs = [{"name": f"a{i}", "url": f"http://h/{i}"} for i in range(4)]
    message = bad_answer({"name": "n", "data": 1, "next_activities": {"definitions": defs}}, max_fanout=3)
    assert "4 next activities" in message
    assert "fan-out limit of 3" in message


# --- call(): against real HTTP servers ---------------------------------------

@pytest.fixture(scope="module")
def lab():
    server = ActivityServer("127.0.0.1", 0).start_in_thread()
    yield server
    server.stop()


def test_the_sample_server_says_nothing_of_a_caller_that_resets_its_connection(lab, capsys):
    # Given a caller that connects, sends half a request line and resets the connection
    # (SO_LINGER 0), as an engine stopping mid-call or a timed-out call can
    handled = threading.Event()
    real = lab.shutdown_request
    lab.shutdown_request = lambda request: (real(request), handled.set())
    try:
        with socket.create_connection(lab.server_address[:2]) as sock:
            sock.sendall(b"POST /lab/ec")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # When the server's thread for it is done with it
        assert handled.wait(5)
    finally:
        lab.shutdown_request = real
    # Expect no traceback on its output
    assert "Traceback" not in capsys.readouterr().err


class _Recorder(BaseHTTPRequestHandler):
    """Answers like /lab/echo and keeps what it was sent, to check the request itself."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                 "content_type": self.headers.get("Content-Type"), "raw": raw})
        if self.path == "/stall":  # the headers and a first piece of the body, then nothing
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"name": "stalled", ')
            self.wfile.flush()
            self.server.release.wait(5)
            return
        if self.path == "/busy-once" and self.headers.get("X-Cameron-Attempt") == "1":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = json.dumps({"name": "recorded", "data": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
        # else a client the test cut short (a timeout, a refused answer): nothing to report


@pytest.fixture(scope="module")
def recorder_server():
    server = _QuietServer(("127.0.0.1", 0), _Recorder)
    server.daemon_threads = True
    server.seen = []
    server.release = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def recorder(recorder_server):
    recorder_server.seen.clear()
    return recorder_server


def loop_call(url, body, *, headers=None, retry=RetryPolicy(max_attempts=1), **limits):
    """blocking_call's contract through the TaskActor's selector loop: one call, waited for."""
    [(result, error)] = run([Call(None, url, body, retry=retry, headers=headers, **limits)])
    if error is not None:
        raise error
    return result


def blocking_call(url, body, **options):
    """activity_blocking.call with the contract of an ordinary function: its answer, or its error raised."""
    result, error, _ = activity_blocking.call(url, body, **options)
    if error is not None:
        raise error
    return result


@pytest.fixture(params=["http.client", "loop"])
def client(request):
    """Both ways Cameron calls an activity: the blocking call (https, on threads) and the loop
    (plain http): the same requests, answers, errors and texts."""
    return blocking_call if request.param == "http.client" else loop_call


def call_error(client, url, **overrides) -> str:
    with pytest.raises(ActivityError) as info:
        client(url, BODY, **{**LIMITS, **overrides})
    return str(info.value)


def test_the_request_is_a_json_post_of_job_key_data_and_requestor(recorder, client):
    # Given an activity that records what it receives
    url = f"http://127.0.0.1:{recorder.server_address[1]}/activity/start"
    # When Cameron calls it
    client(url, BODY, **LIMITS)
    # Expect one POST to that path, Content-Type application/json, and the body as a JSON object
    [seen] = recorder.seen
    assert (seen["method"], seen["path"]) == ("POST", "/activity/start")
    assert seen["content_type"] == "application/json"
    assert json.loads(seen["raw"]) == BODY


def test_extra_headers_go_along_with_the_json_content_type(recorder, client):
    # Given the headers the engine adds to say which job and task is calling
    url = f"http://127.0.0.1:{recorder.server_address[1]}/act"
    client(url, BODY, headers={"X-Cameron-Job": BODY["job"], "X-Cameron-Task": "0:start"}, **LIMITS)
    # Expect them sent, and the body still declared as JSON
    headers = recorder.seen[0]["headers"]
    assert headers["X-Cameron-Job"] == BODY["job"]
    assert headers["X-Cameron-Task"] == "0:start"
    assert headers["Content-Type"] == "application/json"


def test_a_parent_data_object_is_sent_as_json_not_as_a_json_string(recorder, client):
    # Given a later task whose parent answered an object (the original re-encoded it as a string)
    url = f"http://127.0.0.1:{recorder.server_address[1]}/act_1"
    body = {**BODY, "data": {"who_id": "(id,007)", "list": [1, 2]}, "requestor": "whois"}
    # When / Expect the object arrives as an object
    client(url, body, **LIMITS)
    assert json.loads(recorder.seen[0]["raw"])["data"] == {"who_id": "(id,007)", "list": [1, 2]}


def test_a_good_activity_answer_comes_back_checked(lab, client):
    # Given the lab's echo activity / When called / Expect its answer, echoing the data sent
    result = client(f"{lab.url}/lab/echo", {**BODY, "data": {"x": [1, "ü"]}}, **LIMITS)
    assert (result.name, result.data, result.definitions) == ("echo", {"x": [1, "ü"]}, ())


def test_an_answer_with_successors_comes_back_with_their_definitions(lab, client):
    result = client(f"{lab.url}/lab/fanout/2/0", BODY, **LIMITS)
    assert [d.name for d in result.definitions] == ["child_0", "child_1"]
    assert all(d.url == f"{lab.url}/lab/sleep/0" for d in result.definitions)


def test_a_refused_connection_is_an_activity_error(client):
    # Given a port nothing listens on
    message = call_error(client, f"http://127.0.0.1:{free_port()}/start")
    # Expect a short, clear reason
    assert message == "connection failed: connection refused"


def test_an_activity_slower_than_the_read_timeout_is_an_activity_error(lab, client):
    # Given an activity that takes 2 s, and a read timeout of 0.2 s
    message = call_error(client, f"{lab.url}/lab/sleep/2000", read_timeout=0.2)
    # Expect a timeout error naming the limit
    assert message == "no answer within 0.2 s (read timeout)"


def test_an_activity_that_stalls_mid_answer_is_reported_as_a_read_timeout(recorder, client):
    # Given an activity that sends its headers and part of its body, then goes quiet
    url = f"http://127.0.0.1:{recorder.server_address[1]}/stall"
    # When the read timeout passes / Expect the same clear timeout message as for a silent activity
    message = call_error(client, url, read_timeout=0.2)
    assert message == "no answer within 0.2 s (read timeout)"


@pytest.mark.parametrize("status, reason", [(500, "Internal Server Error"), (404, "Not Found"),
                                            (201, "Created")])
def test_a_status_other_than_200_is_an_activity_error(lab, status, reason, client):
    message = call_error(client, f"{lab.url}/lab/status/{status}")
    assert message == f"activity answered HTTP {status} {reason}"


def test_an_unknown_activity_path_is_an_http_404_error(lab, client):
    assert "HTTP 404" in call_error(client, f"{lab.url}/lab/nothing-here")


def test_an_answer_that_is_not_json_is_an_activity_error(lab, client):
    message = call_error(client, f"{lab.url}/lab/notjson")
    assert message == "answer is not JSON: 'this is not JSON'"


def test_an_answer_of_the_wrong_shape_is_an_activity_error(lab, client):
    assert "must be a JSON object, got list" in call_error(client, f"{lab.url}/lab/shape")
    assert "'name'" in call_error(client, f"{lab.url}/lab/noname")
    assert "definitions[0]" in call_error(client, f"{lab.url}/lab/badnext")


def test_an_answer_larger_than_max_bytes_is_an_activity_error(lab, client):
    # Given an answer of about 200 kB and a limit of 100 kB
    message = call_error(client, f"{lab.url}/lab/big/200000", max_bytes=100_000)
    # Expect the limit named in the error
    assert message == "answer larger than the 100000-byte limit"


def test_an_answer_just_under_max_bytes_is_accepted(lab, client):
    # Given an answer whose JSON is a little under the limit
    result = client(f"{lab.url}/lab/big/1000", BODY, **{**LIMITS, "max_bytes": 1100})
    assert result.data == "x" * 1000


def test_a_fanout_over_the_limit_from_a_real_activity_is_an_activity_error(lab, client):
    message = call_error(client, f"{lab.url}/lab/fanout/5/0", max_fanout=4)
    assert "fan-out limit of 4" in message


def test_line_breaks_in_a_header_value_do_not_reach_the_request(recorder, client):
    # Given a task name with a line break (names come from activities' answers)
    url = f"http://127.0.0.1:{recorder.server_address[1]}/act"
    client(url, BODY, headers={"X-Cameron-Task": "1:evil\r\nX-Injected: yes"}, **LIMITS)
    # Expect it sent on one line, adding no header
    headers = recorder.seen[0]["headers"]
    assert headers["X-Cameron-Task"] == "1:evil X-Injected: yes" and "X-Injected" not in headers


def test_an_error_status_is_reported_as_such_even_when_its_page_exceeds_max_bytes(lab, client):
    # Given a 503 whose body is longer than the answer limit (only a 200's body is held to it)
    error = call_exception(client, f"{lab.url}/lab/status/503", max_bytes=5)
    # Expect the status, worth another call, not the size
    assert str(error) == "activity answered HTTP 503 Service Unavailable" and error.retriable


# --- which failures are worth calling again ---------------------------------

def call_exception(client, url, **overrides) -> ActivityError:
    with pytest.raises(ActivityError) as info:
        client(url, BODY, **{**LIMITS, **overrides})
    return info.value


@pytest.mark.parametrize("path, retriable", [
    ("/lab/status/500", True), ("/lab/status/503", True), ("/lab/status/429", True),
    ("/lab/status/404", False), ("/lab/status/400", False), ("/lab/status/201", False),
    ("/lab/notjson", False), ("/lab/shape", False), ("/lab/noname", False), ("/lab/badnext", False),
])
def test_only_5xx_and_429_answers_are_retriable(lab, path, retriable, client):
    assert call_exception(client, f"{lab.url}{path}").retriable is retriable


def test_a_503_is_called_again_after_a_back_off_with_the_attempt_in_a_header(lab, client):
    # Given an activity that answers 503 to attempts 1 and 2 (it reads X-Cameron-Attempt)
    job = uuid.uuid4().hex
    # When called with three attempts / Expect its answer, and the attempts numbered 1, 2, 3
    result = client(f"{lab.url}/lab/flaky/2", BODY, headers={"X-Cameron-Job": job},
                    **{**LIMITS, "retry": RetryPolicy(3, 0.01, 0.05)})
    assert result.name == "flaky"
    assert [c["attempt"] for c in lab.log(job)] == [1, 2, 3]


def test_the_last_failure_is_reported_with_the_number_of_attempts(lab, client):
    job = uuid.uuid4().hex
    message = call_error(client, f"{lab.url}/lab/status/500", headers={"X-Cameron-Job": job},
                         retry=RetryPolicy(2, 0.01, 0.05))
    assert message == "activity answered HTTP 500 Internal Server Error (after 2 attempts)"
    assert len(lab.log(job)) == 2


def test_a_failure_that_will_not_change_is_not_called_again(lab, client):
    job = uuid.uuid4().hex
    message = call_error(client, f"{lab.url}/lab/status/404", headers={"X-Cameron-Job": job},
                         retry=RetryPolicy(3, 0.01, 0.05))
    assert message == "activity answered HTTP 404 Not Found"
    assert len(lab.log(job)) == 1


def test_each_attempt_carries_a_signature_of_its_own_time(recorder, client, monkeypatch):
    # Given a clock that moves 7 s each time it is read, and an activity busy at the first call
    ticks = itertools.count(1_700_000_000, 7)
    monkeypatch.setattr(activity, "time", SimpleNamespace(time=lambda: next(ticks)))
    # When a signed call is made again after the 503
    client(f"http://127.0.0.1:{recorder.server_port}/busy-once", BODY, signing_key=b"k",
           **{**LIMITS, "retry": RetryPolicy(2, 0.01, 0.05)})
    # Expect two signatures, each computed at its attempt, each valid for the body at its time
    first, second = [seen["headers"]["X-Cameron-Signature"] for seen in recorder.seen]
    assert first != second
    for seen in recorder.seen:
        header = seen["headers"]["X-Cameron-Signature"]
        t = int(header.split(",")[0].removeprefix("t="))
        assert activity.signature_problem(b"k", header, seen["raw"], now=t) is None


def test_refused_connections_and_timeouts_are_retriable(lab, client):
    assert call_exception(client, f"http://127.0.0.1:{free_port()}/start").retriable
    assert call_exception(client, f"{lab.url}/lab/sleep/2000", read_timeout=0.2).retriable


def test_an_oversized_answer_is_not_retriable(lab, client):
    assert not call_exception(client, f"{lab.url}/lab/big/200000", max_bytes=100_000).retriable


@pytest.mark.parametrize("header, seconds", [("7", 7.0), ("0", 0.0), ("-3", 0.0), ("soon", None),
                                             (None, None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_is_read_as_seconds_or_a_date(header, seconds):
    assert activity._retry_after(header) == seconds


def test_a_retry_after_date_in_the_future_counts_from_now():
    from email.utils import formatdate
    import time
    assert 50 < activity._retry_after(formatdate(time.time() + 60, usegmt=True)) <= 60


def test_backoff_doubles_with_jitter_in_its_upper_half_and_stops_at_the_maximum():
    policy = activity.RetryPolicy(max_attempts=10, backoff=0.5, backoff_max=3.0)
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (8, 3.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 100  # jittered, not one fixed value


def test_backoff_waits_at_least_what_retry_after_asks_within_the_maximum():
    policy = activity.RetryPolicy(max_attempts=3, backoff=0.1, backoff_max=5.0)
    assert policy.delay(1, retry_after=2.0) == 2.0
    assert policy.delay(1, retry_after=60.0) == 5.0
    assert policy.delay(1, retry_after=0.0) <= 0.1


def test_the_blocking_call_checks_the_allow_list_before_reusing_a_kept_alive_connection():
    # Given this thread's connection to an activity, left idle by a call its process allows
    server = RawServer(lambda n: (ok(), False))
    try:
        host_port = server.url.removeprefix("http://")
        blocking_call(server.url + "/a", BODY, allow=AllowList.of_start("open", server.url), **LIMITS)
        # When a process whose list does not cover it calls the same activity on this thread
        fenced = AllowList("fenced", (parse_rule("127.0.0.1:1"),))
        with pytest.raises(ActivityError) as refused:
            blocking_call(server.url + "/a", BODY, allow=fenced, **LIMITS)
        # Expect it refused before it is sent: one request on the one connection
        assert str(refused.value) == (f"request refused: {host_port} (127.0.0.1) is not in the "
                                      "allow list of process fenced")
        assert len(server.requests) == 1 and server.connections == 1
    finally:
        server.close()
