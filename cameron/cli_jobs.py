"""The CLI's job commands: processes, jobs, job (--watch), cancel and start-job (--wait). They
talk to the running actor system with the same messages as the API, and start jobs as it does."""

import getpass
import json
import re
import shlex
import sys
import time
from urllib.parse import unquote, urlsplit

import redis

from cameron import api, keys, store, term
from cameron import messages as m
from cameron.gateway import ActorGateway, EngineUnavailable, JobGone, job_store_errors

#: Exit codes beyond 0 (all well), 2 (bad input) and 3 (engine not running).
EXIT_FAILED, EXIT_NOT_FOUND, EXIT_CONFLICT = 1, 4, 5
#: How often --watch and --wait read the job again.
POLL = 0.25

#: What the CLI prints of an id (8 hex digits) up to a whole one: found by its prefix.
_SHORT_ID = re.compile(r"^[0-9a-f]{8,31}$")
_JOB_PATH = re.compile(r"^/api/process/([^/]+)/key/([^/]+)/job/([0-9a-f]{32})/?$")


class Refused(Exception):
    """The engine said no: the message is for the user, `code` the exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _print_json(value):
    print(json.dumps(value, indent=2, ensure_ascii=False))


# --- processes ---------------------------------------------------------------

def cmd_processes(config, args) -> int:
    gateway = ActorGateway(config)
    before = gateway.ask("catalog", m.ListProcesses()).processes
    if args.action == "reload":
        reply = gateway.ask("catalog", m.ReloadCatalog())
        if isinstance(reply, m.CatalogInvalid):
            raise Refused(f"catalog not reloaded, the engine keeps the previous one: {reply.reason}", 2)
        old, new = {p.name: p for p in before}, {p.name: p for p in reply.processes}
        change = {"added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new)),
                  "changed": sorted(n for n in set(old) & set(new) if old[n] != new[n])}
        if args.json:
            _print_json({"file": config.processes_file, "processes": sorted(new), **change})
        else:
            print(f"catalog reloaded from {config.processes_file}: {term.plural(len(new), 'process')}"
                  + "".join(f"; {k}: {', '.join(v)}" for k, v in change.items() if v))
        return 0
    if args.json:
        _print_json({"processes": [_process_json(p) for p in before]})
    else:
        print(term.table(["NAME", "START", "TIMEOUTS (connect/read s)"],
                         [[p.name, p.start_url, f"{p.connect_timeout or config.connect_timeout:g}/"
                           f"{p.read_timeout or config.read_timeout:g}"] for p in before]))
    return 0


def _process_json(p) -> dict:
    return {"name": p.name, "start": p.start_url, "connect_timeout": p.connect_timeout,
            "read_timeout": p.read_timeout}


# --- jobs and job ------------------------------------------------------------

def cmd_jobs(config, args) -> int:
    cursor = None
    if args.cursor:
        try:
            cursor = store.decode_cursor(args.cursor)
        except ValueError as e:
            raise Refused(f"--cursor: {e}", 2) from None
    found = _read(job_store(config), "list_jobs", args.process, key=args.key, state=args.status,
                  limit=args.limit, cursor=cursor)
    if found is None:
        raise Refused(f"no process named {args.process!r} in the catalog, and no job of it "
                      "(see `cameron processes`)", EXIT_NOT_FOUND)
    page, next_cursor = found[0], store.encode_cursor(found[1])
    if args.json:
        _print_json({"process": args.process, "jobs": page, "next_cursor": next_cursor})
        return 0
    if not page:
        print(f"no {args.status + ' ' if args.status else ''}jobs of {args.process}"
              + (f" for key {args.key!r}" if args.key is not None else ""))
    else:
        print(term.table(["UUID", "STATUS", "SINCE", "ERRORS", "KEY"],
                         [[j["uuid"], j["status"]["current"], j["status"]["time"], j.get("errors", "-"),
                           j["key"]] for j in page],
                         styles={1: lambda state: state}))
    if next_cursor:
        print(f"more: cameron jobs {args.process} --cursor {next_cursor}"
              + (f" --status {args.status}" if args.status else "")
              + (f" --limit {args.limit}" if args.limit != api.PAGE else "")
              + (f" --key {shlex.quote(args.key)}" if args.key is not None else ""))
    return 0


def job_ref(text: str, config=None) -> tuple:
    """(process, key, uuid) from a job URL, or (None, None, uuid) from a bare uuid or the
    start of one (8 hex digits or more, as the CLI prints them; needs `config` to search)."""
    text = text.strip()
    if keys.is_uuid(text):
        return None, None, text
    if _SHORT_ID.match(text) and config is not None:
        return None, None, _complete_id(config, text)
    path = urlsplit(text).path if "://" in text else text.split("?", 1)[0]
    found = _JOB_PATH.match(path)
    if not found:
        raise Refused(f"{text!r} is neither a job URL (…/api/process/NAME/key/KEY/job/UUID) "
                      "nor a job id (32 hex digits, or its first 8 or more)", 2)
    return unquote(found.group(1)), unquote(found.group(2)), found.group(3)


def _complete_id(config, prefix: str) -> str:
    """The one job id starting with `prefix`, from Redis's uuid index (a SCAN: for people at a
    terminal, never for the API)."""
    try:
        client = store.connect(config.effective_redis_url, config.redis_timeout)
        found = set()
        for name in client.scan_iter(match=keys.job_by_uuid(prefix) + "*", count=1000):
            name = name.decode() if isinstance(name, bytes) else name
            uuid = name[len(keys.job_by_uuid("")):]
            if not keys.is_uuid(uuid):
                continue  # another key under the same prefix (a job's event stream)
            found.add(uuid)
            if len(found) > 1:
                break
    except redis.RedisError as e:
        raise EngineUnavailable(f"Redis: {e}") from None
    if not found:
        raise Refused(f"no job whose id starts with {prefix}", EXIT_NOT_FOUND)
    if len(found) > 1:
        raise Refused(f"more than one job id starts with {prefix}: give more of it", 2)
    return found.pop()


def job_store(config) -> store.JobStore:
    """The engine's jobs in Redis, which the job commands read straight (the engine's actors
    need not run for them)."""
    return store.JobStore(store.connect(config.effective_redis_url, config.redis_timeout), config.engine,
                          idempotency_ttl=config.idempotency_ttl)


def _read(holder, method: str, *args, **kwargs):
    """holder.<method>(...) of a call that reads or writes Redis; its errors as EngineUnavailable."""
    with job_store_errors():
        return getattr(holder, method)(*args, **kwargs)


def read_job(jobs: store.JobStore, ref: tuple) -> dict:
    process, key, uuid = ref
    doc = _read(jobs, "find", uuid) if process is None else _read(jobs, "get", process, key, uuid)
    if doc is None:
        raise Refused(f"no job {uuid}" + (f" of process {process!r} for key {key!r}" if process else ""),
                      EXIT_NOT_FOUND)
    return doc


def cmd_job(config, args) -> int:
    jobs = job_store(config)
    ref = job_ref(args.job, config)
    doc = watch(jobs, ref, config, quiet=args.json) if args.watch else read_job(jobs, ref)
    if args.json:
        _print_json(doc)
    else:
        show_job(doc, config)
    return job_exit(doc) if args.watch else 0


def job_url(config, doc) -> str:
    return config.api_url + api.job_path(doc["process"], doc["key"], doc["uuid"])


def show_job(doc: dict, config):
    state = doc["status"]["current"]
    print(f"{term.paint('job ' + doc['uuid'], 'bold')}  {doc['process']}  key {doc['key']!r}  "
          f"{term.paint(state, state)} since {doc['status']['time']}")
    print(f"  {job_url(config, doc)}")
    tasks = doc["tasks"]
    errors = sum(t["status"]["current"] == "error" for t in tasks)
    extra = f", cancel requested {doc['cancel_requested']}" if "cancel_requested" in doc else ""
    print(f"  requestor {doc['requestor']!r}, {term.plural(len(tasks), 'task')}, {errors} in error{extra}")
    for line in term.task_tree(tasks):
        print("  " + line)


def job_exit(doc: dict) -> int:
    """0 for a job done without task errors, 1 for one with errors or cancelled."""
    failed = doc["status"]["current"] == keys.CANCELLED or any(
        t["status"]["current"] == "error" for t in doc["tasks"])
    return EXIT_FAILED if failed else 0


def watch(jobs: store.JobStore, ref: tuple, config, quiet: bool = False) -> dict:
    """Follow a job until it ends, with a progress bar (a line per change when not a terminal)."""
    tty = sys.stdout.isatty() and not quiet
    last = None
    while True:
        doc = read_job(jobs, ref)
        tasks = doc["tasks"]
        finished = sum(t["status"]["current"] != "running" for t in tasks)
        state = doc["status"]["current"]
        line = (f"{doc['uuid'][:8]} {term.progress_bar(finished, len(tasks))} tasks  "
                f"{term.paint(state, state)}")
        if line != last and not quiet:
            print(("\r\033[K" if tty else "") + line, end="" if tty else "\n", flush=True)
            last = line
        if state in keys.FINAL_STATES:
            if tty:
                print()
            return doc
        time.sleep(POLL)


# --- cancel and start-job ----------------------------------------------------

def cmd_cancel(config, args) -> int:
    gateway = ActorGateway(config)
    process, key, uuid = job_ref(args.job, config)
    if process is None:
        doc = read_job(job_store(config), (None, None, uuid))
        process, key = doc["process"], doc["key"]
    try:
        status, requested = _read(gateway, "cancel", job_store(config), process, key, uuid)
    except JobGone as e:
        if e.status is None:
            raise Refused(f"no job {uuid} of process {process!r} for key {key!r}", EXIT_NOT_FOUND) from None
        raise Refused(f"job {uuid} already ended {e.status}; nothing to cancel", EXIT_CONFLICT) from None
    if args.json:
        _print_json({"uuid": uuid, "process": process, "key": key, "status": status,
                     "cancel_requested": requested})
    else:
        print(f"cancel requested for job {uuid} (it was {status}): no new task starts, "
              "it ends cancelled once its running tasks finish")
    return 0


def cmd_start_job(config, args) -> int:
    requestor = args.requestor or getpass.getuser()
    if not args.key:
        raise Refused("--key must not be empty", 2)
    # Stored the way the API stores a start (straight into Redis, then the engine's inbox).
    jobs = job_store(config)
    data = args.data
    if args.data_json is not None:
        try:
            data = json.loads(args.data_json)
        except ValueError as e:
            raise Refused(f"--data-json is not JSON: {e}", 2) from None
    fields = {"key": args.key, "data": data, "requestor": requestor}
    # A key of our own when none is given: if Redis stalls and the answer is lost, running the
    # command again with it finds the one job instead of starting a second.
    ikey = args.idempotency_key or f"cli-{store.new_uuid()}"
    try:
        job = jobs.start(args.process, **fields, idempotency_key=ikey,
                         fingerprint=store.fingerprint(args.process, **fields))
    except store.UnknownProcess:
        raise Refused(f"no process named {args.process!r} in the catalog (see `cameron processes`)",
                      EXIT_NOT_FOUND) from None
    except store.IdempotencyConflict:
        raise Refused(f"idempotency key {ikey!r} already started a job with a different request",
                      EXIT_CONFLICT) from None
    except redis.RedisError as e:
        if store.never_sent(e):
            raise EngineUnavailable(f"job not created: {e}") from None
        raise Refused(f"Redis did not answer in time ({e}): the job may or may not have been "
                      f"created; run the same command with --idempotency-key {ikey} to get it, "
                      "or to start it once", 1) from None
    except store.EngineStarting as e:
        raise EngineUnavailable(str(e)) from None
    doc = {"process": job.process, "key": job.key, "uuid": job.uuid, "status": job.status}
    if job.replayed:
        doc["replayed"] = True
    doc["url"] = job_url(config, doc)
    if not args.wait:
        if args.json:
            _print_json(doc)
        else:
            print(f"job {doc['uuid']} {'(already started with this idempotency key) ' if doc.get('replayed') else ''}"
                  f"accepted: {doc['url']}")
        return 0
    if not args.json:
        print(f"job {doc['uuid']} accepted: {doc['url']}")
    final = watch(jobs, (doc["process"], doc["key"], doc["uuid"]), config, quiet=args.json)
    if args.json:
        _print_json(final)
    else:
        show_job(final, config)
    return job_exit(final)
