// The dashboard's live parts: tables and charts refreshed from the JSON API. Plain JS, no build step; the base
// URL (the path prefix) comes from <body data-base>. Data goes into the page as text, never as HTML.
(function () {
  "use strict";
  var body = document.body;
  var base = body.dataset.base || "";
  var refreshMs = parseInt(body.dataset.refreshMs || "5000", 10);
  var page = body.dataset.page;

  function api(path) {
    return fetch(base + path, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status + " " + path); } return r.json(); });
  }

  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "\u2013" : String(text);
    if (cls) { td.className = cls; }
    row.appendChild(td);
    return td;
  }

  function link(path, text) {
    var a = document.createElement("a");
    a.href = base + path;
    a.textContent = text;
    return a;
  }

  function every(fn) { fn(); window.setInterval(fn, refreshMs); }

  // Forms that change things ask first (purge, requeue all, revoke, terminate).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    });
  });

  // -- charts (uPlot) ------------------------------------------------------------------------------------------
  var charts = {};
  // opts.stepped: draw each value until the next sample (counts such as replicas), not a slope between samples.
  function chart(id, el, labels, data, opts) {
    if (!window.uPlot || !el) { return; }
    var colors = ["#2f6fde", "#c62828", "#2e7d32", "#f59e0b", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
    var width = Math.max(el.clientWidth || 400, 300);
    if (charts[id] && charts[id].series.length === labels.length + 1) {
      charts[id].setData(data);
      return;
    }
    if (charts[id]) { charts[id].destroy(); }
    el.textContent = "";
    var series = [{}].concat(labels.map(function (label, i) {
      // Points too: a series with one bucket of data between empty ones has no line to draw.
      var line = { label: label, stroke: colors[i % colors.length], width: 1.5, spanGaps: true,
                   points: { show: true, size: 4 } };
      if (opts && opts.stepped && window.uPlot.paths && window.uPlot.paths.stepped) {
        line.paths = window.uPlot.paths.stepped({ align: 1 });
      }
      return line;
    }));
    charts[id] = new window.uPlot({ width: width, height: 220, series: series, scales: { x: { time: true } } }, data, el);
  }

  function rangeQuery() {
    var el = document.getElementById("overview-charts");
    var q = new URLSearchParams(el ? el.dataset.statsQuery : "");
    var range = parseInt(q.get("range_s") || "3600", 10);
    q.delete("range_s");
    var now = Date.now() / 1000;
    q.set("since", String(now - range));
    q.set("until", String(now));
    return q;
  }

  function overview() {
    var q = rangeQuery();
    api("/api/stats?" + q.toString()).then(function (s) {
      var xs = [], tput = [], rate = [], p50 = [], p95 = [], p99 = [];
      s.buckets.forEach(function (b) {
        var done = b.succeeded + b.failed;
        xs.push(b.start);
        tput.push(done / s.step_s);
        rate.push(done ? 100 * b.failed / done : null);
        p50.push(b.p50_s); p95.push(b.p95_s); p99.push(b.p99_s);
      });
      chart("throughput", document.getElementById("chart-throughput"), ["tasks/s"], [xs, tput]);
      chart("failure", document.getElementById("chart-failure-rate"), ["failure %"], [xs, rate]);
      chart("runtime", document.getElementById("chart-runtime"), ["p50", "p95", "p99"], [xs, p50, p95, p99]);
    }).catch(function () {});
  }

  function queueTable() {
    var tbody = document.getElementById("queues-body");
    api("/api/queues").then(function (rows) {
      tbody.textContent = "";
      rows.forEach(function (q) {
        var tr = document.createElement("tr");
        tr.dataset.queue = q.queue;
        tr.dataset.testid = "queue-row-" + q.queue;
        tr.setAttribute("data-testid", "queue-row-" + q.queue);
        cell(tr, q.queue, "name");
        ["ready", "in_flight", "delayed", "dead"].forEach(function (f) { cell(tr, q[f], "num").dataset.field = f; });
        var td = cell(tr, "");
        var a = link("/queues?dead=" + encodeURIComponent(q.queue), "dead letters");
        a.setAttribute("data-testid", "dead-link-" + q.queue);
        td.textContent = "";
        td.appendChild(a);
        tbody.appendChild(tr);
      });
    }).catch(function () {});
    var now = Date.now() / 1000;
    api("/api/queue-samples?since=" + (now - 3600) + "&until=" + now).then(function (s) {
      var names = [], times = {}, byQueue = {};
      s.samples.forEach(function (x) {
        if (!byQueue[x.queue]) { byQueue[x.queue] = {}; names.push(x.queue); }
        byQueue[x.queue][x.at] = x.ready + (x.in_flight || 0);
        times[x.at] = true;
      });
      var xs = Object.keys(times).map(Number).sort(function (a, b) { return a - b; });
      var data = [xs].concat(names.map(function (n) { return xs.map(function (t) { return byQueue[n][t] === undefined ? null : byQueue[n][t]; }); }));
      if (xs.length) { chart("queues", document.getElementById("chart-queues"), names, data); }
    }).catch(function () {});
  }

  function workerTable() {
    var tbody = document.getElementById("workers-body");
    api("/api/workers").then(function (rows) {
      tbody.textContent = "";
      if (!rows.length) {
        var empty = document.createElement("tr");
        empty.className = "empty";
        cell(empty, "No live workers: a worker appears with its first heartbeat.").colSpan = 8;
        tbody.appendChild(empty);
      }
      rows.forEach(function (w) {
        var tr = document.createElement("tr");
        tr.dataset.worker = w.id;
        tr.setAttribute("data-testid", "worker-row");
        cell(tr, w.id + (w.draining ? " (draining)" : ""), "name");
        cell(tr, w.pod);
        cell(tr, w.queues.join(", "));
        cell(tr, w.busy + "/" + w.concurrency, "num").dataset.field = "busy";
        cell(tr, w.processed, "num");
        cell(tr, w.failed, "num");
        cell(tr, w.age_s.toFixed(1) + " s ago");
        var td = cell(tr, "", "children");
        td.textContent = "";
        w.children.forEach(function (c) {
          var div = document.createElement("div");
          div.setAttribute("data-testid", "child");
          div.appendChild(document.createTextNode("#" + c.slot + (c.pid ? " pid " + c.pid : "") + ": "));
          if (c.task_id) { div.appendChild(link("/tasks/" + encodeURIComponent(c.task_id), c.task || c.task_id)); }
          else { div.appendChild(document.createTextNode("idle")); }
          td.appendChild(div);
        });
        tbody.appendChild(tr);
      });
    }).catch(function () {});
  }

  // Each queue's sample nearest in time ``t`` (within 30 s), summed over ``queues``; null when none is near.
  function depthAt(t, queues, samples) {
    var nearest = {};
    samples.forEach(function (s) {
      var gap = Math.abs(s.at - t);
      if (queues.indexOf(s.queue) >= 0 && gap < 30 && (!nearest[s.queue] || gap < nearest[s.queue].gap)) {
        nearest[s.queue] = { gap: gap, depth: s.ready + (s.in_flight || 0) };
      }
    });
    var total = null;
    Object.keys(nearest).forEach(function (q) { total = (total || 0) + nearest[q].depth; });
    return total;
  }

  function autoscaling() {
    var now = Date.now() / 1000;
    var range = "since=" + (now - 3600) + "&until=" + now;
    // The queue samples are the same for every TaskQueue: fetched once per refresh, beside the TaskQueues.
    Promise.all([api("/api/autoscaling?" + range), api("/api/queue-samples?" + range)]).then(function (both) {
      var a = both[0], qs = both[1];
      a.task_queues.forEach(function (tq) {
        var el = document.querySelector('.scale-chart[data-namespace="' + CSS.escape(tq.namespace) + '"][data-name="' + CSS.escape(tq.name) + '"]');
        var xs = tq.samples.map(function (s) { return s.at; });
        if (!xs.length) { return; }
        var replicas = tq.samples.map(function (s) { return s.replicas; });
        var desired = tq.samples.map(function (s) { return s.desired; });
        var depth = xs.map(function (t) { return depthAt(t, tq.queues, qs.samples); });
        chart(tq.namespace + "/" + tq.name, el, ["replicas", "desired", "queue depth"], [xs, replicas, desired, depth],
              { stepped: true });
      });
    }).catch(function () {});
  }

  if (page === "overview") { every(overview); }
  if (page === "queues") { every(queueTable); }
  if (page === "workers") { every(workerTable); }
  if (page === "autoscaling" && document.querySelector(".scale-chart")) { every(autoscaling); }
}());
