/* Live job page and model comparison: progress, log tail and Chart.js curves.
   Polls the job's /live endpoint every second while the job is active. */
(function () {
  "use strict";

  var TONES = {
    ok: ["connected", "approved", "succeeded", "production"],
    bad: ["failed", "rejected", "suspended"],
    warn: ["pending", "invited", "proposed", "expired", "withdrawn", "cancelled", "starting"],
    info: ["running", "candidate"]
  };
  var PALETTE = ["#3346b8", "#c2410c", "#15803d", "#9333ea", "#0e7490", "#b91c1c"];

  function badge(status) {
    var span = document.createElement("span");
    var tone = Object.keys(TONES).find(function (t) { return TONES[t].indexOf(status) >= 0; });
    span.className = "badge" + (tone ? " badge-" + tone : "");
    span.textContent = status ? status.charAt(0).toUpperCase() + status.slice(1).replace(/_/g, " ") : "—";
    return span;
  }

  function pct(v) { return v === null || v === undefined ? "—" : Math.round(v * 100) + "%"; }

  function makeChart(canvas, xTitle, yTitle) {
    if (!window.Chart || !canvas) return null;
    return new window.Chart(canvas, {
      type: "line",
      data: { datasets: [] },
      options: {
        animation: false,
        maintainAspectRatio: false,
        parsing: false,
        interaction: { mode: "nearest", intersect: false },
        scales: {
          x: { type: "linear", title: { display: true, text: xTitle } },
          y: { title: { display: true, text: yTitle } }
        },
        plugins: { legend: { position: "bottom" } },
        elements: { point: { radius: 2 }, line: { borderWidth: 2, tension: 0.15 } }
      }
    });
  }

  /* Series: key → {label, points[]}; points are {x, y}. */
  function Series() { this.map = {}; this.order = []; }
  Series.prototype.add = function (key, label, x, y) {
    if (x === null || x === undefined) return;
    if (!this.map[key]) { this.map[key] = { label: label, points: [] }; this.order.push(key); }
    this.map[key].points.push({ x: x, y: y });
  };
  Series.prototype.datasets = function () {
    var self = this;
    return this.order.map(function (key, i) {
      var s = self.map[key];
      var pts = s.points.slice().sort(function (a, b) { return a.x - b.x; });
      var color = PALETTE[i % PALETTE.length];
      return { label: s.label, data: pts, borderColor: color, backgroundColor: color, borderDash: key.indexOf("remote") === 0 ? [6, 4] : [] };
    });
  };
  Series.prototype.count = function () { return this.order.length; };

  function splitLabel(split) { return split === "validation" ? "validation" : split; }

  /* ---------------- Job page ---------------- */
  var head = document.querySelector("[data-job-live]");
  if (head) {
    var url = head.getAttribute("data-job-live");
    var modelsUrl = head.getAttribute("data-model-url");
    var stateNode = document.getElementById("job-state");
    var state = stateNode ? JSON.parse(stateNode.textContent) : {};
    var lastId = 0;
    var loss = new Series();
    var auc = new Series();
    var localNames = {};
    var remoteBuffer = [];
    var lossChart = makeChart(document.getElementById("chart-loss"), "step", "loss");
    var versionChart = makeChart(document.getElementById("chart-versions"), "version", "progressive AUC");
    var aucChart = makeChart(document.getElementById("chart-auc"), "epoch", "AUC");

    var addMetric = function (m) {
      var who = m.side === "remote" ? "partner " : "";
      var key = m.side + ":" + m.name + ":" + m.split;
      if (m.name === "loss") loss.add(key, who + splitLabel(m.split) + " loss", m.step !== null ? m.step : m.epoch, m.value);
      if (m.name === "auc") auc.add(key, who + splitLabel(m.split) + " AUC", m.epoch, m.value);
    };

    var ingest = function (metrics) {
      metrics.forEach(function (m) {
        lastId = Math.max(lastId, m.id);
        if (m.side === "local") { localNames[m.name + ":" + m.split] = true; addMetric(m); }
        else remoteBuffer.push(m);
      });
      // The partner's curves only where this side has none of its own (the follower receives the leader's).
      remoteBuffer = remoteBuffer.filter(function (m) {
        if (localNames[m.name + ":" + m.split]) return false;
        addMetric(m);
        return false;
      });
      [[lossChart, loss, "loss"], [aucChart, auc, "auc"]].forEach(function (t) {
        var note = document.querySelector("[data-empty-note=" + t[2] + "]");
        if (note) note.hidden = t[1].count() > 0;
        if (t[0]) { t[0].data.datasets = t[1].datasets(); t[0].update("none"); }
      });
    };

    var setBar = function (id, value, status) {
      var bar = document.getElementById(id);
      if (!bar) return;
      var v = Math.max(0, Math.min(1, value || 0));
      bar.querySelector("span").style.width = (v * 100).toFixed(1) + "%";
      bar.setAttribute("aria-valuenow", (v * 100).toFixed(0));
      bar.classList.toggle("is-ok", status === "succeeded");
      bar.classList.toggle("is-bad", status === "failed");
    };

    var field = function (name) { return document.querySelector("[data-field=" + name + "]"); };

    var render = function (job) {
      setBar("progress-local", job.progress, job.status);
      setBar("progress-remote", job.remote_progress, job.remote_status);
      field("progress").textContent = pct(job.progress);
      field("remote_progress").textContent = pct(job.remote_progress);
      field("stage").textContent = job.stage || "—";
      var sb = field("status-badge"); sb.replaceChildren(badge(job.status));
      var rb = field("remote-badge"); rb.replaceChildren(job.remote_status ? badge(job.remote_status) : document.createTextNode("no report yet"));
      field("live-note").textContent = job.active ? "updating live" : "finished";
      ["started_at", "finished_at"].forEach(function (k) {
        if (job[k]) field(k).textContent = job[k].replace("T", " ").slice(0, 19);
      });
      var log = document.getElementById("log-tail");
      if (job.log_tail && log.textContent !== job.log_tail) {
        var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
        log.textContent = job.log_tail;
        if (atBottom) log.scrollTop = log.scrollHeight;
      }
      var errors = document.getElementById("job-errors");
      errors.replaceChildren();
      [["error", "This side"], ["remote_error", "The partner's side"]].forEach(function (e) {
        if (!job[e[0]]) return;
        var div = document.createElement("div");
        div.className = "notice notice-bad";
        div.setAttribute("role", "alert");
        var strong = document.createElement("strong");
        strong.textContent = e[1] + ": ";
        div.appendChild(strong);
        div.appendChild(document.createTextNode(job[e[0]]));
        errors.appendChild(div);
      });
      var links = field("model-link");
      if (job.model_versions && job.model_versions.length && !links.querySelector("a")) {
        job.model_versions.forEach(function (mv) {
          var p = document.createElement("p");
          var a = document.createElement("a");
          a.className = "btn btn-primary";
          a.href = modelsUrl + mv.id + "/";
          a.textContent = "Open model version";
          p.appendChild(a);
          links.appendChild(p);
        });
      }
      if (job.stream) renderStream(job.stream);
      if (job.partitions) renderPartitions(job.partitions);
      if (!job.active) {
        document.querySelectorAll("[data-hide-when-done]").forEach(function (n) { n.hidden = true; });
      }
    };

    /* Serve jobs: both sides' requests, predictions, latency p50/p99 and errors, as the page first showed them. */
    var renderServing = function (sv) {
      document.querySelectorAll("[data-serve]").forEach(function (cell) {
        var parts = cell.getAttribute("data-serve").split(".");
        var v = (sv[parts[0]] || {})[parts[1]];
        if (v === null || v === undefined) { cell.textContent = parts[1].indexOf("latency") === 0 ? "—" : "0"; return; }
        cell.textContent = parts[1].indexOf("latency") === 0 ? v.toFixed(1) + " ms" : Math.round(v).toLocaleString();
      });
    };

    /* Partitioned PSI: each partition's state, progress, figures and error; a failed one is named above the table. */
    var renderPartitions = function (parts) {
      var body = document.querySelector("[data-partition-rows]");
      if (!body) return;
      var count = field("partition-count");
      if (count) count.textContent = String(parts.length);
      var num = function (v) { return v === null || v === undefined ? "—" : v.toLocaleString(); };
      body.replaceChildren();
      var failed = document.querySelector("[data-partition-failed]");
      if (failed) failed.replaceChildren();
      parts.forEach(function (p) {
        var tr = document.createElement("tr");
        tr.setAttribute("data-partition", String(p.index));
        tr.setAttribute("data-state", p.state);
        var th = document.createElement("th");
        th.scope = "row";
        th.textContent = String(p.index);
        tr.appendChild(th);
        var cell = function (content, cls) {
          var td = document.createElement("td");
          if (cls) td.className = cls;
          if (typeof content === "string") td.textContent = content; else td.appendChild(content);
          tr.appendChild(td);
        };
        cell(badge(p.state));
        cell(pct(p.progress), "num");
        cell(num(p.input_size), "num");
        cell(num(p.intersection_size), "num");
        cell(p.reused ? "yes: an earlier attempt's result" : p.reused === false ? "no" : "—");
        cell(p.error || "");
        body.appendChild(tr);
        if (p.state === "failed" && failed) {
          var div = document.createElement("div");
          div.className = "notice notice-bad";
          div.setAttribute("role", "alert");
          var strong = document.createElement("strong");
          strong.textContent = "Partition " + p.index + " of " + parts.length + " failed: ";
          div.appendChild(strong);
          div.appendChild(document.createTextNode(p.error));
          failed.appendChild(div);
        }
      });
    };

    /* Stream jobs: both sides' counters, "waiting for data", versions and their AUC. */
    var fmt = function (key, v) {
      if (v === null || v === undefined) return "—";
      if (key === "match_rate") return (v * 100).toFixed(1) + "%";
      if (key === "lag_s") return v.toFixed(1);
      return Math.round(v).toLocaleString();
    };
    var shownVersions = -1;
    var renderStream = function (s) {
      var waiting = document.querySelector("[data-stream-waiting]");
      if (waiting) waiting.hidden = !s.waiting_for_data;
      document.querySelectorAll("[data-stream-field]").forEach(function (cell) {
        var path = cell.getAttribute("data-stream-field").split(".");
        cell.textContent = fmt(path[1], (s[path[0]] || {})[path[1]]);
      });
      if (s.versions.length === shownVersions) return;
      shownVersions = s.versions.length;
      var list = document.querySelector("[data-stream-versions]");
      if (list && s.versions.length) {
        list.replaceChildren();
        s.versions.forEach(function (v) {
          var li = document.createElement("li");
          var a = document.createElement("a");
          a.href = modelsUrl + v.id + "/";
          a.textContent = "v" + v.version;
          li.appendChild(a);
          if (v.auc !== null && v.auc !== undefined) li.appendChild(document.createTextNode(" · progressive AUC " + v.auc.toFixed(4)));
          list.appendChild(li);
        });
      }
      if (versionChart) {
        var series = new Series();
        s.versions.forEach(function (v) { if (v.auc !== null) series.add("auc", "AUC on its new blocks, each scored before training on it", v.version, v.auc); });
        versionChart.data.datasets = series.datasets();
        versionChart.update("none");
      }
    };

    var wasActive = state.active;
    var finalPolls = 0;
    var poll = function () {
      fetch(url + "?after=" + lastId, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (body) {
          ingest(body.metrics);
          render(body.job);
          if (body.serving) renderServing(body.serving);
          // After the job ends keep polling a little: the partner's last report and the model version follow.
          if (body.job.active || (wasActive && finalPolls++ < 15)) setTimeout(poll, 1000);
          else if (wasActive && !body.job.active) setTimeout(function () { window.location.reload(); }, 0);
        })
        .catch(function () { setTimeout(poll, 3000); });
    };
    poll();
  }

  /* ---------------- Continual training: AUC over a lineage's versions ---------------- */
  var lineageNode = document.getElementById("lineage-data");
  if (lineageNode) {
    var chart = makeChart(document.getElementById("chart-lineage"), "version", "progressive AUC");
    if (chart) {
      var lineage = new Series();
      JSON.parse(lineageNode.textContent).forEach(function (p) {
        if (p.auc !== null && p.auc !== undefined) lineage.add("auc", "AUC on its new blocks, each scored before training on it", p.version, p.auc);
      });
      chart.data.datasets = lineage.datasets();
      chart.update("none");
    }
  }

  /* ---------------- Model comparison ---------------- */
  var cmp = document.getElementById("compare-data");
  if (cmp) {
    var versions = JSON.parse(cmp.textContent);
    var charts = [
      ["chart-compare-loss", "loss", "validation", "epoch", "validation loss"],
      ["chart-compare-auc", "auc", "validation", "epoch", "validation AUC"],
      ["chart-compare-train-loss", "loss", "train", "step", "train loss"]
    ];
    charts.forEach(function (c) {
      var chart = makeChart(document.getElementById(c[0]), c[3], c[4]);
      if (!chart) return;
      var s = new Series();
      versions.forEach(function (v) {
        // This side's points; the partner's only where this side has none (the follower's copy).
        var mine = v.metrics.filter(function (m) { return m.side === "local" && m.name === c[1] && m.split === c[2]; });
        var points = mine.length ? mine : v.metrics.filter(function (m) { return m.name === c[1] && m.split === c[2]; });
        points.forEach(function (m) {
          s.add("v" + v.label, v.label, c[3] === "step" && m.step !== null ? m.step : m.epoch, m.value);
        });
      });
      chart.data.datasets = s.datasets();
      chart.update("none");
    });
  }
})();
