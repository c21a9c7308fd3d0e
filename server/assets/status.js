// Refreshes the server-rendered status page from /api/v1/status without
// reloading it. It builds nodes with textContent only: queue names, actor
// names and tracebacks are data, never markup.
(function () {
  "use strict";
  var body = document.body;
  var api = body.getAttribute("data-api");
  // The trends change once per 15 s slot, and cost about 3.5 KB per queue:
  // every third refresh asks for them, the others reuse the last ones.
  var polls = 0, trends = null;
  var every = Math.max(1, parseInt(body.getAttribute("data-refresh"), 10) || 5) * 1000;
  var timer = null;
  var lastOK = null;

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        if (attrs[k] === null || attrs[k] === undefined || attrs[k] === false) continue;
        if (k === "text") e.textContent = attrs[k];
        else if (k === "class") e.className = attrs[k];
        else e.setAttribute(k, attrs[k]);
      }
    }
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }
  function field(name) { return document.querySelector('[data-field="' + name + '"]'); }
  function setText(name, v) { var e = field(name); if (e) e.textContent = v; }

  // Formatting mirrors the Go template functions in server/status_page.go.
  function num(n) { return Number(n).toLocaleString("en-US"); }
  function optint(v) { return v === null || v === undefined ? "–" : num(Math.round(v)); }
  function bytes(v) {
    if (v === null || v === undefined) return "–";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
  }
  function dur(s) {
    s = Math.floor(s);
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60); s %= 60;
    if (m < 60) return m + "m " + s + "s";
    var h = Math.floor(m / 60); m %= 60;
    if (h < 24) return h + "h " + m + "m";
    var d = Math.floor(h / 24); h %= 24;
    return d + "d " + h + "h";
  }
  function age(v) { return v === null || v === undefined ? "?" : (v === 0 ? "–" : dur(v)); }
  function ago(now, t) {
    var s = (Date.parse(now) - Date.parse(t)) / 1000;
    return s < 1 ? "just now" : dur(s) + " ago";
  }
  function clock(t) {
    var d = new Date(t);
    function p(n) { return (n < 10 ? "0" : "") + n; }
    return p(d.getUTCHours()) + ":" + p(d.getUTCMinutes()) + ":" + p(d.getUTCSeconds()) + " UTC";
  }
  var dbHint = {
    not_configured: "Set --database.url to watch the app's PostgreSQL.",
    ok: "PostgreSQL answers.",
    failing: "PostgreSQL does not answer."
  };
  var stateText = { ok: "OK", failing: "Failing", not_configured: "Not configured", unknown: "Unknown" };
  function has(list, x) { return (list || []).indexOf(x) >= 0; }

  // Sparklines: the same drawing as server/sparkline.go, built as SVG
  // nodes (never markup) from the API's ?history=1.
  var SVG = "http://www.w3.org/2000/svg", sparkW = 120, sparkH = 24, sparkPad = 2;
  var sparkKinds = {
    ready: { what: "ready messages", key: "ready", fmt: num },
    dead_letter: { what: "dead-lettered messages", key: "dead_letter", fmt: num },
    oldest: { what: "oldest message age", key: "oldest_message_age_seconds", fmt: dur }
  };
  function coord(v) { return (Math.round(v * 10) / 10).toFixed(1); }
  function sparkPath(vals, reads) {
    var lo = Infinity, hi = -Infinity, last = 0, n = 0;
    vals.forEach(function (v) {
      if (v === null || !isFinite(v)) return;
      lo = Math.min(lo, v); hi = Math.max(hi, v); last = v; n++;
    });
    if (!n) return { d: "", n: 0 };
    var base = Math.min(lo, 0), top = hi;
    if (top <= base) top = base + 1;
    var step = (sparkW - 2 * sparkPad) / Math.max(vals.length - 1, 1);
    var d = "", seg = [];
    function flush() {
      if (!seg.length) return;
      if (d) d += " ";
      seg.forEach(function (p, k) {
        // A point between two at its height adds nothing to the line.
        if (k > 0 && k < seg.length - 1 && p[1] === seg[k - 1][1] && p[1] === seg[k + 1][1]) return;
        d += (k === 0 ? "M" : "L") + p[0] + " " + p[1];
      });
      if (seg.length === 1) d += "h0";
      seg = [];
    }
    vals.forEach(function (v, i) {
      // Joined across slots nobody read in, broken where a read had no value.
      if (v === null || !isFinite(v)) { if (reads[i] && reads[i] !== "none") flush(); return; }
      var x = sparkPad + i * step, y = sparkH - sparkPad - (v - base) / (top - base) * (sparkH - 2 * sparkPad);
      seg.push([coord(x), coord(y)]);
    });
    flush();
    return { d: d, lo: lo, hi: hi, last: last, n: n };
  }
  function spark(s, q, kind) {
    if (!s.history || !q.history) return null;
    var k = sparkKinds[kind];
    var p = sparkPath(q.history[k.key] || [], s.history.reads || []);
    var label = q.name + ": " + k.what + ", last hour: " +
      (p.n ? "min " + k.fmt(p.lo) + ", max " + k.fmt(p.hi) + ", latest " + k.fmt(p.last) : "no data yet");
    var svg = document.createElementNS(SVG, "svg");
    var attrs = { "class": "spark", width: sparkW, height: sparkH, viewBox: "0 0 " + sparkW + " " + sparkH, role: "img", "aria-label": label };
    for (var a in attrs) svg.setAttribute(a, attrs[a]);
    var title = document.createElementNS(SVG, "title");
    title.textContent = label;
    svg.appendChild(title);
    if (p.d) {
      var path = document.createElementNS(SVG, "path");
      path.setAttribute("d", p.d);
      svg.appendChild(path);
    }
    return svg;
  }
  function cls() { return Array.prototype.filter.call(arguments, Boolean).join(" "); }

  function render(s) {
    var healthy = s.status === "healthy";
    document.title = (healthy ? "✓" : "✗") + " Dramatiq · " + s.environment;
    $("env").textContent = s.environment;
    $("namespace").textContent = s.namespace;
    $("overall").className = "overall " + s.status;
    $("overall-text").textContent = healthy ? "Healthy" : "Unhealthy";

    var f = $("failures");
    f.replaceChildren.apply(f, s.failed.map(function (x) { return el("li", { "data-check": x.check, text: x.message }); }));
    f.hidden = s.failed.length === 0;

    var c = s.components;
    $("card-redis").className = "card " + c.redis.status;
    setText("redis-status", stateText[c.redis.status] || c.redis.status);
    setText("redis-memory", bytes(c.redis.memory_used_bytes));
    setText("redis-clients", optint(c.redis.connected_clients));
    $("card-database").className = "card " + c.database.status;
    setText("database-status", stateText[c.database.status] || c.database.status);
    setText("database-hint", dbHint[c.database.status] || dbHint.failing);
    // Counts read nothing while Redis is down: show them as unknown.
    function known(v) { return c.redis.up ? v : "?"; }
    $("card-processes").className = "card " + c.processes.status;
    setText("processes-alive", known(num(s.processes_alive)));
    setText("processes-stale", known(num(s.processes_stale)));
    field("processes-stale").className = s.processes_stale > 0 ? "warn" : "";
    setText("processes-min", "≥ " + c.processes.min_processes);

    var ready = 0, dead = 0, problems = false;
    s.queues.forEach(function (q) { ready += q.ready; dead += q.dead_letter; problems = problems || q.problems.length > 0; });
    $("card-queues").className = "card " + (!c.redis.up ? "unknown" : problems ? "warn" : "ok");
    setText("queues-count", known(num(s.queues.length)));
    setText("queues-ready", known(num(ready)));
    setText("queues-dead", known(num(dead)));
    field("queues-dead").className = dead > 0 ? "warn" : "";

    renderQueues(s);
    renderDeadLetters(s);
    renderActors(s);
    renderBacklog(s);

    $("version").textContent = s.version.version || "dev";
    var cols = $("collectors");
    var parts = [];
    s.collectors.forEach(function (x, i) {
      if (i) parts.push(" · ");
      parts.push(el("span", { "class": x.success ? "okc" : "badc", text: x.name + " " + Math.round(x.duration_seconds * 1000) + " ms" }));
    });
    cols.replaceChildren.apply(cols, parts);

    $("updated").replaceChildren("Updated ", el("time", { datetime: s.time, text: clock(s.time) }));
    $("live").textContent = "· refreshes every " + every / 1000 + " s";
    $("live").className = "live";
    body.setAttribute("data-source", "api");
    body.setAttribute("data-updated", s.time);
  }

  function renderQueues(s) {
    var box = $("queues");
    if (s.queues.length === 0) {
      box.replaceChildren(el("p", { "class": "empty", text: s.components.redis.up
        ? "No queues found in namespace " + s.namespace + " yet."
        : "Redis is not answering: queues unknown." }));
      return;
    }
    function td(label, fieldName, text, extra, chart) {
      return el("td", { "class": cls("n", extra), "data-label": label, "data-field": fieldName }, [text, chart]);
    }
    var rows = s.queues.map(function (q) {
      return el("tr", { "data-queue": q.name, "class": q.problems.length ? "problem" : null }, [
        el("th", { scope: "row", "data-label": "Queue" }, [el("span", { "class": "qname", text: q.name })]),
        td("Ready", "ready", num(q.ready), has(q.problems, "max_ready") && "bad", spark(s, q, "ready")),
        td("In flight", "in_flight", num(q.in_flight)),
        td("Delayed", "delayed", num(q.delayed)),
        td("Dead-lettered", "dead_letter", num(q.dead_letter), q.dead_letter > 0 && "warn", spark(s, q, "dead_letter")),
        td("Oldest", "oldest", age(q.oldest_message_age_seconds),
          cls(has(q.problems, "max_oldest_age") && "bad", q.oldest_message_age_seconds === null && "muted"), spark(s, q, "oldest")),
        td("Orphaned", "orphaned", num(q.orphaned), q.orphaned > 0 && "bad")
      ]);
    });
    var head = el("tr", null, ["Queue", "Ready", "In flight", "Delayed", "Dead-lettered", "Oldest", "Orphaned"].map(function (h, i) {
      return el("th", { "class": i ? "n" : null, text: h });
    }));
    box.replaceChildren(el("table", { "class": "queues" }, [el("thead", null, [head]), el("tbody", null, rows)]));
  }

  function renderDeadLetters(s) {
    var box = $("deadletters");
    var out = [];
    s.queues.forEach(function (q) {
      var list = q.recent_dead_letters || [];
      if (!list.length) return;
      var count = num(q.dead_letter) + " dead-lettered" + (q.dead_letter > list.length ? ", newest " + list.length + " shown" : "");
      out.push(el("h3", { "data-queue": q.name }, [q.name + " ", el("span", { "class": "count", text: count })]));
      var head = el("tr", null, ["When", "Actor", "Message", "Retries", "Last traceback line"].map(function (h) {
        return el("th", { "class": h === "Retries" ? "n" : null, text: h });
      }));
      var rows = list.map(function (d) {
        var msg = [el("code", { "class": "id", title: d.message_id, text: d.message_id })];
        if (s.message_args_shown && (d.args !== undefined || d.kwargs !== undefined)) {
          msg.push(el("pre", { "class": "args", text: JSON.stringify(d.args === undefined ? null : d.args) + " " + JSON.stringify(d.kwargs === undefined ? null : d.kwargs) }));
        }
        return el("tr", null, [
          el("td", { "data-label": "When" }, [d.dead_lettered_at === null ? el("span", { "class": "muted", text: "unknown" }) : el("time", { datetime: d.dead_lettered_at, title: d.dead_lettered_at, text: ago(s.time, d.dead_lettered_at) })]),
          el("td", { "data-label": "Actor" }, [d.undecodable ? el("span", { "class": "muted", text: "undecodable body" }) : el("code", { text: d.actor })]),
          el("td", { "data-label": "Message" }, msg),
          el("td", { "class": "n", "data-label": "Retries", text: optint(d.retries) }),
          el("td", { "class": "tb", "data-label": "Traceback" }, [d.traceback_last_line ? el("code", { text: d.traceback_last_line }) : el("span", { "class": "muted", text: "none" })])
        ]);
      });
      out.push(el("table", { "class": "dead" }, [el("thead", null, [head]), el("tbody", null, rows)]));
    });
    if (!out.length) {
      out.push(el("p", { "class": "empty", text: s.components.redis.up ? "No dead letters." : "Unknown while Redis is not answering." }));
    }
    box.replaceChildren.apply(box, out);
  }

  // Sorted as actorRows in status_page.go: most dead letters first, ties
  // in the API's order.
  var maxActorRows = 20;
  function renderActors(s) {
    var rows = [];
    s.queues.forEach(function (q) {
      (q.dead_lettered_by_actor || []).forEach(function (a) { rows.push({ queue: q.name, actor: a.actor, total: a.dead_lettered_total }); });
    });
    rows = rows.map(function (r, i) { r.i = i; return r; }).sort(function (a, b) { return b.total - a.total || a.i - b.i; });
    var out = [];
    if (rows.length) {
      var head = el("tr", null, ["Queue", "Actor", "Dead-lettered"].map(function (h) {
        return el("th", { "class": h === "Dead-lettered" ? "n" : null, text: h });
      }));
      var body = rows.slice(0, maxActorRows).map(function (r) {
        return el("tr", null, [
          el("td", { "data-label": "Queue", text: r.queue }),
          el("td", { "data-label": "Actor" }, [el("code", { text: r.actor })]),
          el("td", { "class": "n warn", "data-label": "Dead-lettered", text: num(r.total) })
        ]);
      });
      out.push(el("table", { "class": "actors" }, [el("thead", null, [head]), el("tbody", null, body)]));
      if (rows.length > maxActorRows) out.push(el("p", { "class": "note", text: (rows.length - maxActorRows) + " more not shown." }));
    } else {
      out.push(el("p", { "class": "empty", text: s.components.redis.up ? "No dead letters since the exporter started." : "Unknown while Redis is not answering." }));
    }
    $("actors").replaceChildren.apply($("actors"), out);
  }

  // The same rows as backlogRows in backlog_page.go: the top actors of the
  // longest queues, at most maxBacklogRows. The section exists only while
  // the exporter counts the backlog by actor.
  var maxBacklogRows = 20;
  function renderBacklog(s) {
    var box = $("backlog");
    if (!box) return;
    var qs = s.queues.filter(function (q) { return (q.backlog_by_actor || []).length > 0; })
      .map(function (q, i) { q.i = i; return q; })
      .sort(function (a, b) { return b.ready - a.ready || a.i - b.i; });
    var rows = [];
    qs.forEach(function (q) {
      q.backlog_by_actor.forEach(function (a) { rows.push({ queue: q.name, actor: a.actor, messages: a.messages, sampled: a.estimate === "sampled" }); });
    });
    rows = rows.slice(0, maxBacklogRows);
    var out = [];
    if (rows.length) {
      var head = el("tr", null, ["Queue", "Actor", "Ready"].map(function (h) {
        return el("th", { "class": h === "Ready" ? "n" : null, text: h });
      }));
      out.push(el("table", { "class": "actors" }, [el("thead", null, [head]), el("tbody", null, rows.map(function (r) {
        return el("tr", null, [
          el("td", { "data-label": "Queue", text: r.queue }),
          el("td", { "data-label": "Actor" }, [el("code", { text: r.actor })]),
          el("td", { "class": "n", "data-label": "Ready", text: (r.sampled ? "≈ " : "") + num(Math.round(r.messages)) })
        ]);
      }))]));
    } else {
      out.push(el("p", { "class": "empty", text: s.components.redis.up ? "No ready messages." : "Unknown while Redis is not answering." }));
    }
    box.replaceChildren.apply(box, out);
  }

  function keepTrends(s) {
    if (s.history) {
      trends = { window: s.history, queues: {} };
      s.queues.forEach(function (q) { if (q.history) trends.queues[q.name] = q.history; });
    }
    return s;
  }
  function reuseTrends(s) {
    if (trends) {
      s.history = trends.window;
      s.queues.forEach(function (q) { q.history = trends.queues[q.name] || null; });
    }
    return s;
  }

  function failed(why) {
    var live = $("live");
    live.textContent = "· cannot reach the exporter (" + why + ")" + (lastOK ? ", showing " + clock(lastOK) : "");
    live.className = "live error";
  }

  function refresh() {
    var ctl = window.AbortController ? new AbortController() : null;
    var guard = ctl ? setTimeout(function () { ctl.abort(); }, every * 2) : null;
    var withTrends = trends === null || polls % 3 === 0;
    polls++;
    fetch(withTrends ? api + "?history=1" : api, { headers: { Accept: "application/json" }, cache: "no-store", signal: ctl ? ctl.signal : undefined })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (s) { lastOK = s.time; render(withTrends ? keepTrends(s) : reuseTrends(s)); })
      .catch(function (e) { failed(e.name === "AbortError" ? "timeout" : e.message); })
      .then(function () { if (guard) clearTimeout(guard); schedule(); });
  }

  function schedule() {
    clearTimeout(timer);
    if (!document.hidden) timer = setTimeout(refresh, every);
  }

  // A hidden tab does not poll; it refreshes at once when shown again.
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) clearTimeout(timer); else refresh();
  });
  refresh();
})();
