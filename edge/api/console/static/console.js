// Shared console behaviour: local times, confirm dialogs, revealing a secret.
"use strict";
(function () {
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  window.consoleCsrf = csrf;

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.textContent = d.toLocaleString(); t.title = t.getAttribute("datetime"); }
    });
  }
  window.consoleLocalTimes = localTimes;
  localTimes(document);

  document.querySelectorAll("form.confirm").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      if (!window.confirm(f.dataset.confirm)) ev.preventDefault();
    });
  });

  var reveal = document.getElementById("reveal");
  if (reveal) {
    reveal.addEventListener("click", function () {
      var box = document.getElementById("app-secret");
      if (reveal.dataset.shown) {
        box.textContent = "••••••••••••••••••••••••••••••••"; reveal.textContent = "Reveal";
        delete reveal.dataset.shown; return;
      }
      fetch(reveal.dataset.url, { method: "POST", headers: { "X-CSRF-Token": csrf },
                                  credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (d) { box.textContent = d.app_secret; reveal.textContent = "Hide";
                             reveal.dataset.shown = "1"; })
        .catch(function (e) { box.textContent = "could not reveal: " + e.message; });
    });
  }
})();
