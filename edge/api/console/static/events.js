// Events page: new events arrive over server-sent events and go on top of the list, and
// an incident acknowledged meanwhile (event "ack") gets who and when in the rows of it
// shown (tr[data-incident]); when the session ended the page goes to the login page (and
// comes back after it).
"use strict";
// The filter's From/To: times are shown in the browser's time zone (console.js), so a date
// or date-time typed without an offset is meant in it too. On submit it gets the browser's
// UTC offset *for that date and time* (summer/winter time right per date) before it goes to
// the gateway, which reads a time without an offset in its own zone (as without JS).
(function () {
  var form = document.getElementById("event-filter");
  if (!form) return;
  var NAIVE = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?)?$/;
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  var zoneName = "";
  try { zoneName = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zoneName = ""; }
  function offsetText(minutesEast) {
    var a = Math.abs(minutesEast);
    return (minutesEast < 0 ? "-" : "+") + pad(Math.floor(a / 60)) + ":" + pad(a % 60);
  }
  function sameWall(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() &&
      a.getDate() === b.getDate() && a.getHours() === b.getHours() &&
      a.getMinutes() === b.getMinutes() && a.getSeconds() === b.getSeconds();
  }
  // "2026-03-31T08:00" -> {value: "2026-03-31T08:00+02:00"} (a date alone: its local
  // midnight); a reading the browser's clock showed twice or never -> {error: why}, as the
  // gateway says it; anything else (1h, an offset, Unix time, nonsense) is left as typed
  // for the gateway to judge.
  function withOffset(text) {
    var t = text.trim(), m = NAIVE.exec(t);
    if (!m) return { value: text };
    var d = new Date(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0));
    if (isNaN(d)) return { value: text };
    var date = m[1] + "-" + m[2] + "-" + m[3], time = m[4] ? t.slice(11) : "00:00";
    var where = zoneName ? " in " + zoneName : " in this browser's time zone";
    if (d.getFullYear() !== +m[1] || d.getMonth() !== +m[2] - 1 || d.getDate() !== +m[3] ||
        d.getHours() !== +(m[4] || 0) || d.getMinutes() !== +(m[5] || 0)) {
      return { error: date + "T" + time + " does not exist" + where +
               " (the clock went forward): add an offset or use " + pad(d.getHours()) + ":" +
               pad(d.getMinutes()) };
    }
    var tzo = d.getTimezoneOffset();
    for (var k = -1; k <= 1; k += 2) {
      var other = new Date(d.getTime() + k * 3 * 3600e3).getTimezoneOffset();
      var alt = new Date(d.getTime() + (other - tzo) * 60000);
      if (other !== tzo && alt.getTime() !== d.getTime() && sameWall(alt, d)) {
        var first = alt < d ? other : tzo, last = alt < d ? tzo : other;
        return { error: date + "T" + time + " is ambiguous" + where +
                 " (the clock went back): add " + offsetText(-first) + " or " +
                 offsetText(-last) };
      }
    }
    return { value: date + "T" + time + offsetText(-tzo) };
  }
  window.consoleFilterTime = withOffset;
  var hint = document.getElementById("filter-zone");
  if (hint) {
    hint.textContent = "Dates and times without an offset are in your browser's time zone (" +
      (zoneName ? zoneName + ", " : "") + "now UTC" + offsetText(-new Date().getTimezoneOffset()) +
      "), as the times in the list.";
  }
  ["since", "until"].forEach(function (name) {
    var input = form.elements[name];
    if (input) input.addEventListener("input", function () { input.setCustomValidity(""); });
  });
  form.addEventListener("submit", function (ev) {
    var fields = ["since", "until"].map(function (name) { return form.elements[name]; });
    var got = fields.map(function (input) {
      return input && input.value ? withOffset(input.value) : null;
    });
    for (var i = 0; i < fields.length; i++) {
      if (got[i] && got[i].error) {
        ev.preventDefault();
        fields[i].setCustomValidity(got[i].error);
        fields[i].reportValidity();
        return;
      }
    }
    got.forEach(function (g, j) { if (g) fields[j].value = g.value; });
  });
})();

(function () {
  var table = document.getElementById("events");
  var live = document.getElementById("live-state");
  if (!table || live.dataset.live !== "1") return;
  var body = table.querySelector("tbody");
  var q = new URLSearchParams({ after: table.dataset.after });
  ["camera", "task", "since"].forEach(function (k) { if (table.dataset[k]) q.set(k, table.dataset[k]); });
  window.consoleEventsSeen = 0;

  function td(tr, text) { var c = document.createElement("td"); c.textContent = text; tr.appendChild(c); return c; }
  function fillAck(cell, a) {
    cell.textContent = "";
    var who = document.createElement("span"); who.className = "pill ok";
    who.textContent = a.by; who.title = a.note || ""; cell.appendChild(who);
    var at = document.createElement("time"); at.setAttribute("datetime", new Date(a.at_ms).toISOString());
    cell.appendChild(document.createTextNode(" ")); cell.appendChild(at);
  }
  // {incident_id, event_id, ack: {by, at, at_ms, note}}: every row of that incident shown
  function acked(d) {
    body.querySelectorAll("tr[data-incident]").forEach(function (tr) {
      if (tr.dataset.incident !== d.incident_id) return;
      var cell = tr.querySelector("td.ack");
      if (!cell) return;
      fillAck(cell, d.ack);
      window.consoleLocalTimes(tr);
    });
    window.consoleAcksSeen++;
  }
  window.consoleAcksSeen = 0;
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
    tr.dataset.incident = e.type === "start" ? e.event_id : (e.start_event_id || "");
    var ack = td(tr, ""); ack.className = "ack";
    if (e.ack) fillAck(ack, e.ack);
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
  // lastId: "<events rowid>.<event_acks rowid>", the stream's ids
  var lastId = table.dataset.after + "." + (table.dataset.acks || "0"), wait = 1000, retry = null;
  var es = null;
  function connect() {
    retry = null;
    var parts = lastId.split(".");
    q.set("after", parts[0]); q.set("acks", parts[1] || "0");
    es = new EventSource("/console/events/stream?" + q.toString());
    es.addEventListener("zone", function (m) {
      if (m.lastEventId) lastId = m.lastEventId;
      add(JSON.parse(m.data));
    });
    es.addEventListener("ack", function (m) {
      if (m.lastEventId) lastId = m.lastEventId;
      acked(JSON.parse(m.data));
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
