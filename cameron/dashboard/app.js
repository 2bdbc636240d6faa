// Cameron's dashboard: plain JavaScript, no build step. Views: "#/" (catalog, start form,
// recent jobs, live from the stream of every job's start and end) and "#/job/<uuid>" (the
// job's task tree, live from its own event stream).
"use strict";

const STATES = ["scheduled", "running", "done", "cancelled"];
const FINAL = new Set(["done", "cancelled"]);
const $ = (sel, root = document) => root.querySelector(sel);
const enc = encodeURIComponent;
let token = sessionStorage.getItem("cameron-token") || "";
let viewAbort = null; // aborts the current view's requests and streams when the view changes

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

function badge(state) {
  return el("span", { class: `badge s-${state}`, text: state });
}

function flash(text, ok = false) {
  const f = $("#flash");
  f.textContent = text || "";
  f.className = ok ? "ok" : "";
}

class Unauthorized extends Error {}

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (resp.status === 401) { askToken(); throw new Unauthorized("token required"); }
  const body = resp.headers.get("Content-Type")?.includes("json") ? await resp.json() : null;
  if (!resp.ok) throw new Error(body ? `${body.title}: ${body.description || ""}` : `HTTP ${resp.status}`);
  return body;
}

function askToken() {
  $("#view").replaceChildren(); // nothing to show without one
  $("#token").hidden = false;
  $("#token-input").focus();
}

// --- event streams: fetch, so that they can send the token as a header --------------------

// Reads the Server-Sent Events at `path` into onEvent(name, data) and, when the connection
// drops, connects again with the last id seen (Last-Event-ID), until `signal` aborts or
// `endsWith(name, data)` says the stream is over. `onOpen` runs each time the server has
// answered, `onDown` each time a connection failed or ended early.
async function follow(path, onEvent, signal, { endsWith = () => false, onOpen = () => {}, onDown = () => {} } = {}) {
  let last = null;
  while (!signal.aborted) {
    try {
      const resp = await fetch(path, { headers: headers(last ? { "Last-Event-ID": last } : {}), signal });
      if (resp.status === 401) { askToken(); return; }
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      onOpen();
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const ev = {};
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const i = line.indexOf(":");
            ev[line.slice(0, i)] = line.slice(i + 1).replace(/^ /, "");
          }
          if (!ev.event) continue;
          if (ev.id) last = ev.id;
          const data = JSON.parse(ev.data);
          onEvent(ev.event, data);
          if (endsWith(ev.event, data)) return;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    onDown();
    await new Promise((r) => setTimeout(r, 2000)); // then resume from the last event seen
  }
}

// fn() at most once per `ms`, however often this is called.
function throttled(fn, ms) {
  let pending = null;
  return () => { if (!pending) pending = setTimeout(() => { pending = null; fn(); }, ms); };
}

// --- home: catalog, start form, recent jobs ------------------------------------------------

async function home(signal) {
  const view = $("#view");
  view.replaceChildren($("#home").content.cloneNode(true));
  const { processes } = await api("api/process", { signal });
  const names = processes.map((p) => p.name);
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const startSelect = $("#start-form select[name=process]");
  const filterSelect = $("#filter-form select[name=process]");
  for (const n of names) {
    startSelect.append(el("option", { text: n }));
    filterSelect.append(el("option", { text: n }));
  }
  const filter = $("#filter-form");
  filter.process.value = params.get("process") || names[0] || "";
  filter.key.value = params.get("key") || "";
  filter.status.value = params.get("status") || "";
  filter.limit.value = params.get("limit") || "50";
  startSelect.value = filter.process.value;

  const body = $(".catalog tbody");
  const readCounts = new Map(); // process -> reads its counts again, at most once a second
  for (const p of processes) {
    const cell = el("td", { class: "counts-cell" });
    body.append(el("tr", {}, el("td", {}, el("a", { href: `#/?process=${enc(p.name)}`, text: p.name })),
      cell, el("td", { class: "mono", text: p.start })));
    const read = () => api(`api/process/${enc(p.name)}/counts`, { signal }).then((counts) => {
      cell.replaceChildren(...STATES.map((s) => el("a", {
        href: `#/?process=${enc(p.name)}&status=${s}`, class: `badge s-${s}`,
        text: `${counts[s]} ${s}`, "aria-label": `${counts[s]} ${s} jobs of ${p.name}` })));
    }).catch(() => {});
    readCounts.set(p.name, throttled(read, 1000));
  }

  $("#start-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = e.target;
    try {
      const job = await api(`api/process/${enc(f.process.value)}/start`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ key: f.key.value, data: f.data.value, requestor: f.requestor.value || "dashboard" }),
      });
      location.hash = `#/job/${job.uuid}`;
    } catch (err) { if (!(err instanceof Unauthorized)) flash(`Could not start: ${err.message}`); }
  });
  filter.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const k of ["process", "key", "status", "limit"]) if (filter[k].value) q.set(k, filter[k].value);
    location.hash = `#/?${q}`;
  });

  // Pages: the cursors of the pages seen so far, to go back.
  const cursors = [params.get("cursor") || ""];
  const rows = new Map(); // uuid -> its row on the page shown
  const row = (j) => {
    const tr = el("tr", {}, el("td", {}, badge(j.status.current)),
      el("td", { class: "mono" }, el("a", { href: `#/job/${j.uuid}`, text: j.uuid.slice(0, 12) + "…", "aria-label": `job ${j.uuid}` })),
      el("td", { text: j.key }), el("td", { text: j.requestor || "" }),
      el("td", { class: "mono", text: j.scheduled || "" }), el("td", { text: j.errors ?? "" }));
    rows.set(j.uuid, tr);
    return tr;
  };
  const show = async () => {
    const q = new URLSearchParams({ limit: filter.limit.value });
    if (filter.status.value) q.set("status", filter.status.value);
    const cursor = cursors[cursors.length - 1];
    if (cursor) q.set("cursor", cursor);
    const process = filter.process.value;
    if (!process) return;
    const path = filter.key.value ? `api/process/${enc(process)}/key/${enc(filter.key.value)}/job`
                                  : `api/process/${enc(process)}/job`;
    const page = await api(`${path}?${q}`, { signal });
    rows.clear();
    const tbody = $(".jobs tbody");
    tbody.replaceChildren(...page.jobs.map(row));
    if (!page.jobs.length) tbody.append(el("tr", {}, el("td", { colspan: "6", text: "No jobs." })));
    $("#next").disabled = !page.next_cursor;
    $("#next").onclick = () => { cursors.push(page.next_cursor); show(); };
    $("#prev").disabled = cursors.length < 2;
    $("#prev").onclick = () => { cursors.pop(); show(); };
    return page;
  };
  const showSoon = throttled(() => show().catch(() => {}), 300);

  // Live: the server pushes every job's start and end (api/events). The list and the counts
  // are read each time the stream has answered, so no change falls between the read and the
  // stream; then a job's row changes in place, and the page is read again (at most every
  // 0.3 s) when a job joins or leaves it.
  const live = $("#list-live");
  let shown = false;
  const readAll = () => {
    show().then(() => { shown = true; }).catch((err) => { if (!(err instanceof Unauthorized) && !signal.aborted) flash(err.message); });
    for (const read of readCounts.values()) read();
  };
  follow("api/events", (type, e) => {
    if (type === "reset") { readAll(); return; }
    if (type !== "job") return;
    readCounts.get(e.process)?.();
    if (e.process !== filter.process.value) return;
    const tr = rows.get(e.uuid);
    const fits = !filter.status.value || filter.status.value === e.status;
    if (tr && fits) {
      tr.cells[0].replaceChildren(badge(e.status));
      if (e.errors != null) tr.cells[5].textContent = e.errors;
    } else if (cursors.length === 1 && (tr || (fits && (!filter.key.value || filter.key.value === e.key)))) {
      showSoon();
    }
  }, signal, {
    onOpen: () => { live.textContent = "Live: jobs appear and change as they run."; readAll(); },
    onDown: () => { live.textContent = "Reconnecting…"; if (!shown) readAll(); },
  });
}

// --- a job: facts, cancel, the task tree ---------------------------------------------------

function fmtMs(ms) {
  if (ms == null) return "";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

async function jobPage(uuid, signal) {
  const view = $("#view");
  view.replaceChildren($("#jobpage").content.cloneNode(true));
  let doc = await api(`api/job/${uuid}`, { signal });
  const tasks = new Map(); // n -> {node, status, ...}
  const tree = $(".tree");
  const job = { status: doc.status.current };

  const facts = (d) => {
    const dl = $(".facts");
    const row = (k, v, cls) => [el("dt", { text: k }), el("dd", { class: cls || "", text: v ?? "" })];
    dl.replaceChildren(...row("Process", d.process), ...row("Key", d.key), ...row("Job", d.uuid, "mono"),
      ...row("Requestor", d.requestor), ...row("Data", typeof d.data === "string" ? d.data : JSON.stringify(d.data), "mono"),
      ...row("Status time", d.status.time, "mono"), ...row("Errors", d.errors ?? 0),
      ...(d.cancel_requested ? row("Cancel asked", d.cancel_requested, "mono") : []));
  };
  const setJob = (status) => {
    job.status = status;
    $(".job .state").replaceChildren(badge(status));
    $(".job .title").textContent = `${doc.process} · ${doc.key}`;
    $("#cancel").disabled = FINAL.has(status) || !!doc.cancel_requested;
    $(".live").textContent = FINAL.has(status) ? "Finished." : "Live: updates as the job runs.";
    document.title = `${status} · ${doc.process} · Cameron`;
  };
  const counts = () => {
    const c = {};
    for (const t of tasks.values()) c[t.status] = (c[t.status] || 0) + 1;
    $(".counts").textContent = `(${tasks.size}: ${Object.entries(c).map(([s, n]) => `${n} ${s}`).join(", ")})`;
  };

  const render = (t) => {
    const s = t.node.querySelector("summary");
    s.replaceChildren(...[badge(t.status), el("span", { class: "name", text: t.name }),
      el("span", { class: "meta", text: `#${t.n}` }),
      t.duration_ms != null ? el("span", { class: "meta", text: `took ${fmtMs(t.duration_ms)}` }) : null,
      t.attempts ? el("span", { class: "meta", text: `${t.attempts} attempt${t.attempts > 1 ? "s" : ""}` }) : null,
      t.started ? el("span", { class: "meta mono", text: `started ${t.started}` }) : null,
      t.ended ? el("span", { class: "meta mono", text: `${t.status} ${t.ended}` }) : null,
      t.requestor ? el("span", { class: "meta", text: `from ${t.requestor}` }) : null].filter(Boolean));
    t.node.querySelector("summary").setAttribute("aria-label",
      `task ${t.n} ${t.name}, ${t.status}${t.duration_ms != null ? ", " + fmtMs(t.duration_ms) : ""}`);
  };
  const showOutput = async (t) => {
    const out = t.node.querySelector(".out");
    if (t.status === "running") { out.replaceChildren(el("p", { class: "meta", text: "Still running: no output yet." })); return; }
    if (t.loaded !== t.status) {
      doc = await api(`api/job/${uuid}`, { signal });
      t.loaded = t.status;
    }
    const d = doc.tasks[t.n];
    const text = typeof d?.data === "string" ? d.data : JSON.stringify(d?.data, null, 2);
    out.replaceChildren(...[el("p", { class: "meta", text: t.status === "error" ? "Error:" : "Output:" }),
      el("pre", { class: t.status === "error" ? "error" : "", text: text ?? "" }),
      d?.url ? el("p", { class: "meta mono", text: d.url }) : null].filter(Boolean));
  };
  const add = (n, name, parent, requestor) => {
    if (tasks.has(n)) return tasks.get(n);
    const node = el("details", { class: "task" }, el("summary"), el("div", { class: "out" }));
    const li = el("li", {}, node, el("ul"));
    const t = { n, name, parent, requestor, status: "running", node, li };
    tasks.set(n, t);
    const up = parent != null && parent >= 0 ? tasks.get(parent) : null;
    (up ? up.li.lastChild : tree).append(li);
    node.addEventListener("toggle", () => { if (node.open) showOutput(t).catch(() => {}); });
    return t;
  };

  facts(doc);
  setJob(doc.status.current);
  for (const d of doc.tasks) {
    const t = add(d.index, d.id || d.name, d.parent, d.requestor);
    Object.assign(t, { status: d.status.current, duration_ms: d.duration_ms, attempts: d.attempts });
    if (d.status.current === "running") t.started = d.status.time; else t.ended = d.status.time;
    render(t);
  }
  counts();

  $("#cancel").addEventListener("click", async () => {
    try {
      const r = await api(`api/process/${enc(doc.process)}/key/${enc(doc.key)}/job/${uuid}/cancel`, { method: "POST" });
      doc.cancel_requested = r.cancel_requested;
      facts(doc); setJob(job.status);
      flash("Cancel asked: running tasks finish, no new task starts.", true);
    } catch (err) { if (!(err instanceof Unauthorized)) flash(`Could not cancel: ${err.message}`); }
  });

  if (FINAL.has(job.status)) return;
  follow(`api/job/${uuid}/events`, (type, e) => {
    if (type === "job") {
      if (FINAL.has(e.status)) api(`api/job/${uuid}`, { signal }).then((d) => { doc = d; facts(d); setJob(e.status); }).catch(() => {});
      setJob(e.status);
    } else if (type === "cancel") {
      doc.cancel_requested = e.time; facts(doc); setJob(job.status);
    } else if (type === "task") {
      const t = e.status === "running" ? add(e.n, e.id || e.name, e.parent, e.requestor) : tasks.get(e.n);
      if (!t) return;
      t.status = e.status;
      if (e.status === "running") t.started = e.time;
      else Object.assign(t, { ended: e.time, duration_ms: e.duration_ms, attempts: e.attempts });
      render(t);
      if (t.node.open) showOutput(t).catch(() => {});
      counts();
    }
  }, signal, { endsWith: (type, e) => type === "job" && FINAL.has(e.status) });
}

// --- routing --------------------------------------------------------------------------------

async function route() {
  if (viewAbort) viewAbort.abort();
  viewAbort = new AbortController();
  flash("");
  const m = location.hash.match(/^#\/job\/([0-9a-f]{32})/);
  try {
    if (m) await jobPage(m[1], viewAbort.signal);
    else await home(viewAbort.signal);
  } catch (err) {
    if (!(err instanceof Unauthorized) && err.name !== "AbortError") flash(err.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("#token-input").value.trim();
    sessionStorage.setItem("cameron-token", token);
    $("#token").hidden = true;
    $("#token-forget").hidden = false;
    route();
  });
  $("#token-forget").hidden = !token;
  $("#token-forget").addEventListener("click", () => {
    token = ""; sessionStorage.removeItem("cameron-token"); location.reload();
  });
  window.addEventListener("hashchange", route);
  route();
});
