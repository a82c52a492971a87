/* Fedsite dashboard: small progressive enhancements. Every page works without it. */
(function () {
  "use strict";

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
      var psi = kind.value !== "vertical_nn";
      ticketForm.querySelector("[data-train-params]").hidden = !trains;
      ticketForm.querySelector("[data-psi-params]").hidden = !psi;
    };
    partner.addEventListener("change", syncDatasets);
    kind.addEventListener("change", syncKind);
    syncDatasets();
    syncKind();
  }
})();
