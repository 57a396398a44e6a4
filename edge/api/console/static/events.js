// Events page: new events arrive over server-sent events and go on top of the list; when
// the session ended the page goes to the login page (and comes back after it).
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

  // The stream ends every few seconds and the browser reconnects by itself (Last-Event-ID).
  // A reconnect answered with anything but 200 (the session ended: 401; the gateway
  // restarting: 502/503) closes the EventSource for good, so then ask the session probe:
  // 401 -> the login page, coming back here; else a new EventSource after a backoff
  // (1 s doubling to 30 s) that starts after the last event shown.
  var lastId = table.dataset.after, wait = 1000, retry = null;
  var es = null;
  function connect() {
    retry = null;
    q.set("after", lastId);
    es = new EventSource("/console/events/stream?" + q.toString());
    es.addEventListener("zone", function (m) {
      if (m.lastEventId) lastId = m.lastEventId;
      add(JSON.parse(m.data));
    });
    es.addEventListener("open", function () {
      wait = 1000; live.textContent = "live"; live.className = "pill ok";
    });
    es.addEventListener("error", function () {
      live.textContent = "reconnecting…"; live.className = "pill";
      if (es.readyState === EventSource.CLOSED && retry === null) check();
    });
  }
  function later() {
    live.textContent = "reconnecting in " + Math.round(wait / 1000) + " s…";
    retry = setTimeout(connect, wait);
    wait = Math.min(wait * 2, 30000);
  }
  function check() {
    retry = -1;  // a check is running
    fetch("/console/data/session", { credentials: "same-origin", cache: "no-store",
                                     headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) {
          location.assign("/console/login?next=" +
                          encodeURIComponent(location.pathname + location.search));
          return;
        }
        later();
      }, later);
  }
  connect();
})();
