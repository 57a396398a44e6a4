// Cameras page: draw each camera's zones and counting lines (with their "in" arrow) over
// its latest frame (SVG in image pixels), and keep the lines' in/out counts current:
// GET #line-counts[data-url] every data-every-ms while the tab is visible, numbers changed
// in place (no redraw); a failed poll marks the counts stale and retries (backing off to
// 5x the period), a hidden tab stops polling and polls at once when shown again; a 401
// (the session ended) goes to the login page, which comes back here.
"use strict";
(function () {
  var SVGNS = "http://www.w3.org/2000/svg";
  function lineLabel(task, name, counts) {
    return task + "/" + name + (counts ? "  in " + counts["in"] + " · out " + counts.out : "");
  }
  function draw(frame) {
    var img = frame.querySelector("img"), svg = frame.querySelector("svg");
    var w = img.naturalWidth, h = img.naturalHeight;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.textContent = "";
    JSON.parse(frame.dataset.zones).forEach(function (z) {
      var pts = z.polygon ? z.polygon.map(function (p) {
        return z.normalized ? [p[0] * w, p[1] * h] : p;
      }) : [[0, 0], [w, 0], [w, h], [0, h]];
      var poly = document.createElementNS(SVGNS, "polygon");
      poly.setAttribute("points", pts.map(function (p) { return p[0] + "," + p[1]; }).join(" "));
      poly.setAttribute("class", "zone");
      poly.dataset.zone = z.name;
      svg.appendChild(poly);
      var label = document.createElementNS(SVGNS, "text");
      label.setAttribute("x", pts[0][0] + 6); label.setAttribute("y", pts[0][1] + 18);
      label.setAttribute("class", "zone-label");
      label.textContent = z.task + "/" + z.name;
      svg.appendChild(label);
    });
    JSON.parse(frame.dataset.lines || "[]").forEach(function (ln) {
      var pts = ln.points.map(function (p) { return ln.normalized ? [p[0] * w, p[1] * h] : p; });
      var g = window.ZoneRules.drawLine(svg, pts, w, h,
                                        { name: ln.name, label: lineLabel(ln.task, ln.name, ln.counts) });
      g.dataset.task = ln.task;
    });
    frame.dataset.drawn = "1";
  }
  document.querySelectorAll(".cam .frame").forEach(function (frame) {
    var img = frame.querySelector("img");
    img.addEventListener("load", function () { draw(frame); });
    function none() {
      img.hidden = true; frame.querySelector(".noframe").hidden = false; frame.dataset.drawn = "none";
    }
    img.addEventListener("error", none);
    if (img.complete) { if (img.naturalWidth) draw(frame); else none(); }  // before this ran
  });

  // -- live counts ----------------------------------------------------------------------
  var box = document.getElementById("line-counts");
  if (!box) return;
  var pill = document.getElementById("counts-state");
  var every = Math.max(500, Number(box.dataset.everyMs) || 2000);
  var TIMEOUT_MS = 10000;
  var timer = null, busy = false, failures = 0, lastOk = null;
  window.consoleLinePolls = 0;  // answers applied so far

  function setState(name, text) {
    box.dataset.state = name;
    pill.textContent = text;
    pill.className = "pill" + (name === "live" ? " ok" : name === "stale" ? " bad" : "");
  }

  function markStale(span, why) {
    var stale = !!why && span.dataset["in"] != null;  // "no count yet" is not stale
    span.classList.toggle("stale", stale);
    span.classList.toggle("bad", stale);
    if (stale) span.title = "stale: " + why; else span.removeAttribute("title");
  }

  function showCounts(li, c, why) {
    var span = li.querySelector(".counts");
    if (!span) return;
    if (c) {
      var text = "in " + c["in"] + " · out " + c.out;
      if (span.textContent !== text) span.textContent = text;
      span.dataset["in"] = String(c["in"]); span.dataset.out = String(c.out);
      span.classList.remove("hint");
      if (!li.querySelector(".since")) {
        var since = document.createElement("span");
        since.className = "hint since"; since.textContent = "since the gateway started";
        span.after(" ", since);
      }
    }
    markStale(span, c ? "" : why);
  }

  function apply(d) {
    document.querySelectorAll(".cam[data-camera]").forEach(function (cam) {
      var got = d.cameras[cam.dataset.camera];
      if (!got) return;
      function counts(task, name) { return (got.lines[task] || {})[name] || null; }
      var frame = cam.querySelector(".frame");
      var lines = JSON.parse(frame.dataset.lines || "[]"), changed = false;
      lines.forEach(function (ln) {
        var c = counts(ln.task, ln.name);
        if (c && (!ln.counts || ln.counts["in"] !== c["in"] || ln.counts.out !== c.out)) {
          ln.counts = c; changed = true;
        }
      });
      if (changed) frame.dataset.lines = JSON.stringify(lines);  // for a later redraw
      cam.querySelectorAll("svg g.counting-line").forEach(function (g) {
        var c = counts(g.dataset.task, g.dataset.line), t = g.querySelector("text.line-label");
        if (!c || !t) return;
        var text = lineLabel(g.dataset.task, g.dataset.line, c);
        if (t.textContent !== text) t.textContent = text;
      });
      cam.querySelectorAll("li.line-item").forEach(function (li) {
        showCounts(li, counts(li.dataset.task, li.dataset.line),
                   got.running ? "no count from the camera" : "the camera does not run");
      });
    });
  }

  function schedule(ms) {
    clearTimeout(timer); timer = null;
    if (document.hidden) { setState("paused", "paused while the tab is hidden"); return; }
    timer = setTimeout(poll, ms);
  }

  function poll() {
    if (busy) return;
    if (document.hidden) { schedule(0); return; }  // says paused; shown again polls
    clearTimeout(timer); timer = null;
    busy = true;
    var ctl = new AbortController();
    var kill = setTimeout(function () { ctl.abort(); }, TIMEOUT_MS);
    fetch(box.dataset.url, { credentials: "same-origin", cache: "no-store",
                             headers: { Accept: "application/json" }, signal: ctl.signal })
      .then(function (r) {
        if (r.ok) return r.json();
        if (r.status === 401) {  // the session ended: log in again, then back here
          location.assign("/console/login?next=" +
                          encodeURIComponent(location.pathname + location.search));
        }
        return r.json().catch(function () { return {}; }).then(function (b) {
          throw new Error(b.error || "HTTP " + r.status);
        });
      })
      .then(function (d) {
        apply(d);
        failures = 0; lastOk = new Date();
        setState("live", "live, updated " + lastOk.toLocaleTimeString());
        window.consoleLinePolls++;
      })
      .catch(function (e) {
        failures++;
        var why = e.name === "AbortError" ? "no answer in " + TIMEOUT_MS / 1000 + " s" : e.message;
        setState("stale", "stale" + (lastOk ? " since " + lastOk.toLocaleTimeString() : "") +
                 ": " + why + "; retrying");
        document.querySelectorAll("li.line-item .counts").forEach(function (s) { markStale(s, why); });
      })
      .then(function () {
        clearTimeout(kill); busy = false;
        schedule(failures ? Math.min(every * Math.pow(2, failures - 1), 5 * every) : every);
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) schedule(0);  // stops the timer, says paused
    else if (!busy) poll();
  });
  poll();
})();
