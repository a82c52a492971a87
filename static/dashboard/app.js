/* Fedsite dashboard: small progressive enhancements. Every page works without it. */
(function () {
  "use strict";

  // Progress bars: width from aria-valuenow (set here, not in a style attribute, for the Content-Security-Policy).
  document.querySelectorAll(".progress[aria-valuenow] > span").forEach(function (span) {
    var v = parseFloat(span.parentNode.getAttribute("aria-valuenow"));
    if (!isNaN(v)) span.style.width = Math.max(0, Math.min(100, v)) + "%";
  });

  // Workspace switcher: go as soon as a workspace is picked.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // Copy buttons: <button data-copy="#selector">.
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.querySelector(button.getAttribute("data-copy"));
      if (!source) return;
      var text = source.value || source.textContent;
      var done = function () {
        var label = button.textContent;
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = label; }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { source.select(); document.execCommand("copy"); done(); });
      } else {
        source.select();
        document.execCommand("copy");
        done();
      }
    });
  });

  // Ticket form: show the chosen partner's datasets, and the parameters the job kind uses.
  var ticketForm = document.querySelector("form[data-ticket-form]");
  if (ticketForm) {
    var partner = ticketForm.querySelector("[name=partner]");
    var remote = ticketForm.querySelector("[name=remote_dataset]");
    var kind = ticketForm.querySelector("[name=kind]");
    var mapNode = document.getElementById("remote-partner");
    var owner = mapNode ? JSON.parse(mapNode.textContent) : {};
    var training = (ticketForm.getAttribute("data-training-kinds") || "").split(",");
    var trees = (ticketForm.getAttribute("data-tree-kinds") || "").split(",");
    var streams = (ticketForm.getAttribute("data-stream-kinds") || "").split(",");
    var syncDatasets = function () {
      Array.prototype.forEach.call(remote.options, function (opt) {
        if (!opt.value) return;
        var show = !partner.value || owner[opt.value] === partner.value;
        opt.hidden = !show;
        opt.disabled = !show;
        if (!show && opt.selected) remote.value = "";
      });
    };
    var syncKind = function () {
      var trains = training.indexOf(kind.value) >= 0;
      var stream = streams.indexOf(kind.value) >= 0;
      var psi = kind.value.indexOf("vertical_") !== 0 && !stream;
      var streamParams = ticketForm.querySelector("[data-stream-params]");
      if (streamParams) streamParams.hidden = !stream;
      ticketForm.querySelector("[data-train-params]").hidden = !trains;
      var treeParams = ticketForm.querySelector("[data-tree-params]");
      if (treeParams) treeParams.hidden = trees.indexOf(kind.value) < 0;
      ticketForm.querySelector("[data-psi-params]").hidden = !psi;
    };
    partner.addEventListener("change", syncDatasets);
    kind.addEventListener("change", syncKind);
    syncDatasets();
    syncKind();
  }

  // Live pages: poll the workspace's stamp. Progress bars move in place; when the stamp
  // changes (a partner decided, a job finished) the page refreshes itself, unless the
  // user is typing, in which case it says so and waits for a click.
  var watch = document.body.getAttribute("data-watch");
  if (watch) {
    var first = null;
    var note = document.querySelector("[data-stale-note]");
    var busy = function () {
      var active = document.activeElement;
      if (active && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) return true;
      return Array.prototype.some.call(document.querySelectorAll("textarea, input[type=text], input[type=search]"), function (el) {
        return el.value !== el.defaultValue;
      });
    };
    // Once the user navigates away, a refresh must not replace (abort) that navigation.
    var leaving = false;
    window.addEventListener("beforeunload", function () { leaving = true; });
    var refresh = function () { if (!leaving) window.location.replace(window.location.href); };
    var bar = function (id, value) {
      var node = document.querySelector('[data-job-progress="' + id + '"]');
      if (!node || value === null || value === undefined) return;
      var v = Math.max(0, Math.min(1, value));
      node.querySelector("span").style.width = (v * 100).toFixed(1) + "%";
      node.setAttribute("aria-valuenow", (v * 100).toFixed(0));
      var pct = document.querySelector('[data-job-pct="' + id + '"]');
      if (pct) pct.textContent = Math.round(v * 100) + "%";
    };
    var tick = function () {
      if (leaving) return;
      if (document.hidden) { setTimeout(tick, 2000); return; }
      fetch(watch, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (body) {
          Object.keys(body.jobs || {}).forEach(function (id) { bar(id, body.jobs[id].progress); });
          if (first === null) first = body.stamp;
          else if (body.stamp !== first) {
            if (!busy()) { refresh(); return; }
            if (note) note.hidden = false;
          }
          setTimeout(tick, 1500);
        })
        .catch(function () { setTimeout(tick, 5000); });
    };
    if (note) note.querySelector("[data-reload]").addEventListener("click", refresh);
    // Back to this page from the browser's cache: the polling loop ended when the user left; start it again.
    window.addEventListener("pageshow", function (e) { if (e.persisted && leaving) { leaving = false; tick(); } });
    tick();
  }
})();
