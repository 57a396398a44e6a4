// Events page: new events arrive over server-sent events and go on top of the list.
"use strict";
(function () {
  var table = document.getElementById("events");
  var live = document.getElementById("live-state");
  if (!table || live.dataset.live !== "1") return;
  var body = table.querySelector("tbody");
  var q = new URLSearchParams({ after: table.dataset.after });
  ["camera", "task", "since"].forEach(function (k) { if (table.dataset[k]) q.set(k, table.dataset[k]); });
  window.consoleEventsSeen = 0;

  function td(tr, text) { var c = document.createElement("td"); c.textContent = text; tr.appendChild(c); return c; }
  function add(e) {
    var tr = document.createElement("tr");
    tr.dataset.event = e.event_id; tr.className = "ev-" + e.type + " fresh";
    var cell = td(tr, "");
    if (e.snapshot) {
      var url = "/console/snapshots/" + e.snapshot.split("/").map(encodeURIComponent).join("/");
      var a = document.createElement("a"); a.href = url;
      var img = document.createElement("img"); img.className = "thumb"; img.alt = "snapshot";
      img.src = url + "?thumb=1";
      a.appendChild(img); cell.appendChild(a);
    }
    var t = document.createElement("time"); t.setAttribute("datetime", new Date(e.time_ms).toISOString());
    td(tr, "").appendChild(t);
    td(tr, e.type); td(tr, e.camera); td(tr, e.task + " / " + e.zone); td(tr, e.label);
    td(tr, e.score.toFixed(2)); td(tr, e.track_id == null ? "" : String(e.track_id));
    td(tr, e.attributes && e.attributes.dwell_s != null ? Number(e.attributes.dwell_s).toFixed(1) : "");
    var ack = td(tr, ""); ack.className = "ack";
    if (e.ack) {
      var who = document.createElement("span"); who.className = "pill ok";
      who.textContent = e.ack.by; who.title = e.ack.note || ""; ack.appendChild(who);
      var at = document.createElement("time"); at.setAttribute("datetime", new Date(e.ack.at_ms).toISOString());
      ack.appendChild(document.createTextNode(" ")); ack.appendChild(at);
    }
    window.consoleLocalTimes(tr);
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
    var none = document.getElementById("no-events"); if (none) none.remove();
    window.consoleEventsSeen++;
  }

  var es = new EventSource("/console/events/stream?" + q.toString());
  es.addEventListener("zone", function (m) { add(JSON.parse(m.data)); });
  es.addEventListener("open", function () { live.textContent = "live"; live.className = "pill ok"; });
  es.addEventListener("error", function () { live.textContent = "reconnecting…"; live.className = "pill"; });
})();
