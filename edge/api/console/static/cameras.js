// Cameras page: draw each camera's zones and counting lines (with their "in" arrow) over
// its latest frame (SVG in image pixels), and keep the lines' in/out counts current:
// GET #line-counts[data-url] every data-every-ms while the tab is visible, numbers changed
// in place (no redraw); a failed poll marks the counts stale and retries (backing off to
// 5x the period), a hidden tab stops polling and polls at once when shown again; a 401
// (the session ended) goes to the login page, which comes back here.
// Frames and camera states (the second part): every #cams[data-frame-every-ms] each
// camera's frame.jpg is fetched again (its X-Frame-Ms time), decoded off screen and then
// swapped in (the overlay is redrawn in its pixels), and the time of the frame shown is
// written under it -- "n s old" in red when older than OLD_MS by the gateway's clock, or
// why no new frame came (HTTP error, no answer); the camera's state pill (online · fps /
// offline / disabled) follows GET #cams[data-state-url] (live gateways only).
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
    img.addEventListener("load", function () {
      img.hidden = false; frame.querySelector(".noframe").hidden = true;
      draw(frame);
    });
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


(function () {
  var cams = document.getElementById("cams");
  if (!cams) return;
  var every = Math.max(1000, Number(cams.dataset.frameEveryMs) || 3000);
  var stateUrl = cams.dataset.stateUrl || "";
  var OLD_MS = 10000, TIMEOUT_MS = 10000;
  var skew = 0;  // gateway clock - browser clock (ms), from the state poll
  var timer = null, busy = 0;
  window.consoleFramePolls = 0;

  function login() {
    location.assign("/console/login?next=" + encodeURIComponent(location.pathname + location.search));
  }
  function hhmmss(ms) { return new Date(ms).toLocaleTimeString(); }

  // the note under a frame: its time and age, or why there is no newer one
  function note(cam) {
    var el = cam.querySelector(".frame-time"), frame = cam.querySelector(".frame");
    if (!el || !frame) return;
    var ms = Number(frame.dataset.frameMs || 0), why = frame.dataset.failed || "";
    var text, bad = false;
    if (frame.dataset.snapshot === "1") {
      text = "latest incident snapshot (no live frame here)";
    } else if (ms) {
      var age = Math.max(0, Date.now() + skew - ms);
      text = "frame of " + hhmmss(ms);
      if (age > OLD_MS) { text += ", " + Math.round(age / 1000) + " s old"; bad = true; }
      if (why) { text += "; no newer frame: " + why; bad = true; }
    } else {
      text = why ? "no frame: " + why : "";
    }
    el.dataset.frameMs = ms ? String(ms) : "";
    el.classList.toggle("bad", bad);
    if (el.textContent !== text) el.textContent = text;
  }

  function loadFrame(cam) {
    var frame = cam.querySelector(".frame");
    if (!frame || !frame.dataset.src || frame.dataset.busy === "1") return Promise.resolve();
    var img = frame.querySelector("img");
    frame.dataset.busy = "1";
    var ctl = new AbortController();
    var kill = setTimeout(function () { ctl.abort(); }, TIMEOUT_MS);
    var when = null;
    return fetch(frame.dataset.src + "?t=" + Date.now(),
                 { credentials: "same-origin", cache: "no-store", signal: ctl.signal })
      .then(function (r) {
        if (r.status === 401) { login(); throw new Error("logged out"); }
        if (r.status === 404) throw new Error("the camera has no frame yet");
        if (!r.ok) throw new Error("HTTP " + r.status);
        when = r.headers.get("X-Frame-Ms");
        frame.dataset.snapshot = r.headers.get("X-Frame-Time") === "snapshot" ? "1" : "";
        return r.blob();
      })
      .then(function (blob) {
        return new Promise(function (resolve, reject) {
          var url = URL.createObjectURL(blob), pre = new Image();
          pre.onload = function () {
            var old = frame.dataset.blob;
            frame.dataset.blob = url;
            img.src = url;  // decoded already: swapped at once; "load" redraws the overlay
            if (old) setTimeout(function () { URL.revokeObjectURL(old); }, 1000);
            resolve();
          };
          pre.onerror = function () { URL.revokeObjectURL(url); reject(new Error("not an image")); };
          pre.src = url;
        });
      })
      .then(function () {
        frame.dataset.frameMs = when && /^\d+$/.test(when) ? when : "";
        frame.dataset.failed = "";
      }, function (e) {
        frame.dataset.failed = e.name === "AbortError" ? "no answer in " + TIMEOUT_MS / 1000 + " s"
                                                        : e.message;
      })
      .then(function () {
        clearTimeout(kill); frame.dataset.busy = ""; note(cam);
      });
  }

  function showState(cam, st) {
    var pill = cam.querySelector(".cam-state"), off = cam.querySelector(".cam-off");
    if (!pill) return;
    var text, cls;
    if (!st) { text = "no status"; cls = ""; }
    else if (!st.enabled) { text = "disabled"; cls = ""; }
    else if (st.online) {
      text = "online" + (st.fps ? " · " + Number(st.fps).toFixed(1) + " fps" : ""); cls = " ok";
    } else if (st.online == null) { text = "no status"; cls = ""; }
    else { text = "offline"; cls = " bad"; }
    if (pill.textContent !== text) pill.textContent = text;
    pill.className = "pill cam-state" + cls;
    pill.removeAttribute("title");
    if (off) { off.textContent = (st && st.off) || ""; off.hidden = !(st && st.off); }
  }

  function pollStates() {
    if (!stateUrl) return Promise.resolve();
    return fetch(stateUrl, { credentials: "same-origin", cache: "no-store",
                             headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) { login(); throw new Error("logged out"); }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (d) {
        skew = d.time_ms - Date.now();
        document.querySelectorAll(".cam[data-camera]").forEach(function (cam) {
          showState(cam, d.cameras[cam.dataset.camera]);
        });
      }, function (e) {
        document.querySelectorAll(".cam .cam-state").forEach(function (pill) {
          pill.title = "state not updated: " + e.message;
          pill.classList.add("bad");
        });
      });
  }

  function tick() {
    clearTimeout(timer); timer = null;
    if (document.hidden) return;  // visibilitychange starts it again
    busy++;
    var all = [pollStates()];
    document.querySelectorAll(".cam[data-camera]").forEach(function (cam) { all.push(loadFrame(cam)); });
    Promise.all(all).then(function () {
      busy--; window.consoleFramePolls++;
      if (!busy && !document.hidden) timer = setTimeout(tick, every);
    });
  }
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { clearTimeout(timer); timer = null; }
    else if (!busy) tick();
  });
  tick();  // at once: the time of the frame the page came with is not known
})();
