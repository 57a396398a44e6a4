// Zone and line editor: click to add a point, drag to move it, double-click to remove it;
// Save posts the polygon or line (image pixels) with the CSRF token; the server validates,
// saves the config (with a backup) and applies it to the running camera. A zone's click
// goes into the nearest edge; a line's goes on its end, or into a segment clicked on
// (the order of a line's points sets its "in" side: Reverse swaps it).
"use strict";
(function () {
  var root = document.getElementById("editor");
  if (!root) return;
  var SVGNS = "http://www.w3.org/2000/svg";
  var cfg = JSON.parse(root.dataset.zone);
  var isLine = cfg.kind === "line", rules = window.ZoneRules;
  var canSave = root.dataset.canSave === "1";
  var img = document.getElementById("editor-image"), svg = document.getElementById("editor-svg");
  var status = document.getElementById("zone-status"), out = document.getElementById("zone-points");
  var save = document.getElementById("zone-save");
  var W = 0, H = 0, pts = [], initial = [], history = [], drag = -1, moved = false;

  function snapshot() { history.push(pts.map(function (p) { return p.slice(); })); if (history.length > 100) history.shift(); }
  function toImage(ev) {
    var r = img.getBoundingClientRect();
    var x = (ev.clientX - r.left) * W / r.width, y = (ev.clientY - r.top) * H / r.height;
    return [Math.round(Math.min(Math.max(x, 0), W) * 10) / 10, Math.round(Math.min(Math.max(y, 0), H) * 10) / 10];
  }
  function segDist(p, a, b) {
    var dx = b[0] - a[0], dy = b[1] - a[1], l = dx * dx + dy * dy;
    var t = l ? Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / l)) : 0;
    var x = a[0] + t * dx - p[0], y = a[1] + t * dy - p[1];
    return x * x + y * y;
  }
  function check() {
    return isLine ? rules.validateLine(pts, W, H, cfg.max_points)
                  : rules.validate(pts, W, H, cfg.min_points, cfg.max_points);
  }
  function render() {
    svg.textContent = "";
    var err = check();
    if (isLine) rules.drawLine(svg, pts, W, H, { name: cfg.name, invalid: !!err, label: "start" });
    else if (pts.length) {
      var shape = document.createElementNS(SVGNS, pts.length >= 3 ? "polygon" : "polyline");
      shape.setAttribute("points", pts.map(function (p) { return p[0] + "," + p[1]; }).join(" "));
      shape.setAttribute("class", "edge" + (err ? " invalid" : ""));
      svg.appendChild(shape);
    }
    var r = radius();
    pts.forEach(function (p, i) {
      var c = document.createElementNS(SVGNS, "circle");
      c.setAttribute("cx", p[0]); c.setAttribute("cy", p[1]); c.setAttribute("r", r);
      c.setAttribute("class", "vertex"); c.dataset.index = i;
      svg.appendChild(c);
    });
    out.textContent = JSON.stringify(pts);
    root.dataset.valid = err ? "0" : "1";
    if (!status.dataset.sticky) {
      status.textContent = err ? err : pts.length + " points — valid";
      status.className = "status " + (err ? "bad" : "ok");
    }
    save.disabled = !canSave || !!err;
  }
  function edited() { delete status.dataset.sticky; render(); }
  function radius() { return Math.max(4, Math.round(Math.max(W, H) / 150)); }

  // Fit the frame into the window: at most the height left between the frame's top and
  // the window's bottom, less the buttons' row, so "Save and apply" stays in view (the
  // overlay follows the image's box; toImage maps the scaled box back to frame pixels).
  var frame = img.parentNode, buttons = save.parentNode;
  function fit() {
    var top = frame.getBoundingClientRect().top + window.scrollY;
    var cs = window.getComputedStyle(buttons);
    var below = buttons.offsetHeight + parseFloat(cs.marginTop) + parseFloat(cs.marginBottom) + 8;
    root.style.setProperty("--editor-max-h", Math.max(240, Math.floor(window.innerHeight - top - below)) + "px");
  }
  fit();
  window.addEventListener("resize", fit);

  function start() {
    fit();
    W = img.naturalWidth; H = img.naturalHeight;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    initial = cfg.points ? cfg.points.map(function (p) {
      return cfg.normalized ? [Math.round(p[0] * W * 10) / 10, Math.round(p[1] * H * 10) / 10] : [p[0], p[1]];
    }) : [];
    pts = initial.map(function (p) { return p.slice(); });
    root.dataset.ready = "1";
    render();
  }
  img.addEventListener("load", start);
  img.addEventListener("error", function () {
    img.hidden = true; root.querySelector(".noframe").hidden = false; save.disabled = true;
    root.dataset.ready = "none";
  });
  if (img.complete && img.naturalWidth) start();

  svg.addEventListener("mousedown", function (ev) {
    if (ev.button !== 0 || !W) return;
    var t = ev.target;
    moved = false;
    if (t.classList.contains("vertex")) { snapshot(); drag = Number(t.dataset.index); ev.preventDefault(); }
  });
  window.addEventListener("mousemove", function (ev) {
    if (drag < 0) return;
    pts[drag] = toImage(ev); moved = true; edited();
  });
  window.addEventListener("mouseup", function () { drag = -1; });
  svg.addEventListener("click", function (ev) {
    if (!W || ev.target.classList.contains("vertex")) { if (moved) moved = false; return; }
    var p = toImage(ev);
    snapshot();
    if (isLine) {
      var near = -1, nd = Math.pow(2 * radius(), 2);
      for (var k = 0; k + 1 < pts.length; k++) {
        var dk = segDist(p, pts[k], pts[k + 1]);
        if (dk <= nd) { nd = dk; near = k; }
      }
      if (near < 0) pts.push(p); else pts.splice(near + 1, 0, p);
    } else if (pts.length < 3) { pts.push(p); }
    else {
      var best = 0, bd = Infinity;
      for (var i = 0; i < pts.length; i++) {
        var d = segDist(p, pts[i], pts[(i + 1) % pts.length]);
        if (d < bd) { bd = d; best = i; }
      }
      pts.splice(best + 1, 0, p);
    }
    edited();
  });
  svg.addEventListener("dblclick", function (ev) {
    if (!ev.target.classList.contains("vertex")) return;
    snapshot(); pts.splice(Number(ev.target.dataset.index), 1); edited();
  });
  document.getElementById("zone-undo").addEventListener("click", function () {
    if (history.length) { pts = history.pop(); edited(); }
  });
  document.getElementById("zone-clear").addEventListener("click", function () { snapshot(); pts = []; edited(); });
  document.getElementById("zone-reset").addEventListener("click", function () {
    snapshot(); pts = initial.map(function (p) { return p.slice(); }); edited();
  });
  var reverse = document.getElementById("line-reverse");
  if (reverse) reverse.addEventListener("click", function () { snapshot(); pts.reverse(); edited(); });
  save.addEventListener("click", function () {
    save.disabled = true;
    status.textContent = "Saving…"; status.className = "status";
    fetch(cfg.save_url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": window.consoleCsrf },
      body: JSON.stringify({ points: pts, width: W, height: H })
    }).then(function (r) { return r.json().then(function (d) { return [r.ok, d]; }); })
      .then(function (res) {
        var ok = res[0], d = res[1];
        status.dataset.sticky = "1";
        if (ok) {
          status.textContent = d.message + (d.backup ? " — backup: " + d.backup : "");
          status.className = "status ok"; root.dataset.saved = String(Date.now());
          initial = pts.map(function (p) { return p.slice(); });
        } else {
          status.textContent = "Not saved: " + (d.error || "error"); status.className = "status bad";
        }
        save.disabled = !canSave;
      })
      .catch(function (e) {
        status.dataset.sticky = "1";
        status.textContent = "Not saved: " + e.message; status.className = "status bad"; save.disabled = !canSave;
      });
  });
})();
