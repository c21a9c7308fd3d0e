// Refreshes the server-rendered status page without reloading it: it asks
// the server for this same page (same filter, same number of queues) and
// swaps in the parts marked data-swap. The server draws everything, so the
// script has no second copy of the formatting, and a refresh costs what
// the first paint cost: a bounded number of queue rows, whatever the
// broker holds. Nodes come from a DOMParser document, where scripts never
// run, and only the marked parts are taken.
(function () {
  "use strict";
  var body = document.body;
  var every = Math.max(1, parseInt(body.getAttribute("data-refresh"), 10) || 5) * 1000;
  var timer = null, inFlight = false, lastOK = null;

  function $(id) { return document.getElementById(id); }
  function clock(t) {
    var d = new Date(t);
    function p(n) { return (n < 10 ? "0" : "") + n; }
    return p(d.getUTCHours()) + ":" + p(d.getUTCMinutes()) + ":" + p(d.getUTCSeconds()) + " UTC";
  }

  function swap(doc) {
    document.title = doc.title;
    Array.prototype.forEach.call(document.querySelectorAll("[data-swap]"), function (old) {
      var fresh = old.id && doc.getElementById(old.id);
      if (fresh) old.replaceWith(document.importNode(fresh, true));
    });
    body.setAttribute("data-updated", doc.body.getAttribute("data-updated") || "");
    body.setAttribute("data-source", "refresh");
  }

  function live(text, error) {
    var e = $("live");
    e.textContent = text;
    e.className = error ? "live error" : "live";
  }

  // The next refresh waits for this one to end, and longer after a slow
  // one: a page the browser needs seconds for never refreshes on top of
  // itself.
  function schedule(took) {
    clearTimeout(timer);
    var wait = Math.max(every, 3 * took);
    if (!document.hidden) timer = setTimeout(refresh, wait);
    return wait;
  }

  function refresh() {
    if (inFlight) return;
    inFlight = true;
    var began = Date.now();
    var ctl = window.AbortController ? new AbortController() : null;
    var guard = ctl ? setTimeout(function () { ctl.abort(); }, Math.max(every * 2, 30000)) : null;
    var ok = false;
    fetch(location.pathname + location.search, { headers: { Accept: "text/html" }, cache: "no-store", signal: ctl ? ctl.signal : undefined })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        swap(new DOMParser().parseFromString(html, "text/html"));
        lastOK = body.getAttribute("data-updated");
        ok = true;
      })
      .catch(function (e) {
        live("· cannot reach the exporter (" + (e.name === "AbortError" ? "timeout" : e.message) + ")" +
          (lastOK ? ", showing " + clock(lastOK) : ""), true);
      })
      .then(function () {
        if (guard) clearTimeout(guard);
        inFlight = false;
        var wait = schedule(Date.now() - began);
        if (ok) live("· refreshes every " + Math.round(wait / 1000) + " s", false);
        body.setAttribute("data-rendered", String(Date.now() - began));
      });
  }

  // A hidden tab does not poll; it refreshes at once when shown again.
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) clearTimeout(timer); else refresh();
  });
  schedule(0);
})();
