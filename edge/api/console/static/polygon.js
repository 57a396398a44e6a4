// Zone polygon rules, mirroring the server (edge.kernels.geometry.validate_polygon,
// check_polygon_in_image and the fence API's 4..9 points), counting-line rules (the
// config's: edge.config.LineConfig -> validate_polyline) and the drawing of a counting line
// with its "in" arrow, shared by the Cameras page and the editor. The server's check is the
// one that counts; this one only tells the user early.
"use strict";
(function () {
  function cross(o, a, b) { return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]); }
  function onSegment(p, a, b) {  // p on the closed segment a-b (p collinear with it)
    return Math.min(a[0], b[0]) <= p[0] && p[0] <= Math.max(a[0], b[0]) &&
           Math.min(a[1], b[1]) <= p[1] && p[1] <= Math.max(a[1], b[1]);
  }
  function same(p, q) { return p[0] === q[0] && p[1] === q[1]; }
  // Closed segments a-b and c-d share at least one point.
  function intersects(a, b, c, d) {
    var d1 = cross(c, d, a), d2 = cross(c, d, b), d3 = cross(a, b, c), d4 = cross(a, b, d);
    if (((d1 > 0 && d2 < 0) || (d1 < 0 && d2 > 0)) && ((d3 > 0 && d4 < 0) || (d3 < 0 && d4 > 0))) return true;
    return (d1 === 0 && onSegment(a, c, d)) || (d2 === 0 && onSegment(b, c, d)) ||
           (d3 === 0 && onSegment(c, a, b)) || (d4 === 0 && onSegment(d, a, b));
  }
  // Adjacent edges a-b, b-c overlap beyond their shared vertex b (a spike back along a line).
  function folds(a, b, c) {
    if (cross(a, b, c) !== 0) return false;
    return (onSegment(c, a, b) && !same(c, b)) || (onSegment(a, b, c) && !same(a, b));
  }
  function fmt(v) { return Math.round(v * 10) / 10; }

  // null when valid, else why not (the wording follows the server's).
  function validate(points, width, height, minPoints, maxPoints) {
    var n = points.length;
    if (n < minPoints || n > maxPoints)
      return "a zone needs " + minPoints + " to " + maxPoints + " points, got " + n;
    for (var i = 0; i < n; i++) {
      var p = points[i];
      if (!isFinite(p[0]) || !isFinite(p[1])) return "polygon coordinates must be finite numbers";
    }
    var pts = points.filter(function (p, i) { return !same(p, points[(i + 1) % n]); });
    if (pts.length === 0) pts = [points[0]];
    var m = pts.length;
    if (m < 3) return "polygon needs at least 3 distinct vertices, got " + m;
    for (i = 0; i < m; i++) {
      for (var j = i + 1; j < m; j++) {
        var a = pts[i], b = pts[(i + 1) % m], c = pts[j], d = pts[(j + 1) % m];
        if (j === i + 1) { if (folds(a, b, d)) return "polygon is not simple: the outline folds back on itself"; continue; }
        if (i === 0 && j === m - 1) { if (folds(c, a, b)) return "polygon is not simple: the outline folds back on itself"; continue; }
        if (intersects(a, b, c, d)) return "polygon is not simple: its edges cross or touch";
      }
    }
    var area2 = 0;
    for (i = 0; i < m; i++) area2 += pts[i][0] * pts[(i + 1) % m][1] - pts[(i + 1) % m][0] * pts[i][1];
    if (area2 === 0) return "polygon has zero area";
    for (i = 0; i < n; i++) {
      p = points[i];
      if (p[0] < 0 || p[1] < 0 || p[0] > width || p[1] > height)
        return "area point " + (i + 1) + " (" + fmt(p[0]) + ", " + fmt(p[1]) + ") lies outside the " + width + "x" + height + " image";
    }
    return null;
  }

  // null when valid, else why not: the config's rules for a line's points (2..maxPoints
  // once consecutive repeats are dropped; a simple open polyline as GEOS decides it: no
  // crossing, touching or folding back, a closed one meeting itself only where it ends;
  // coordinates >= 0), then every point inside the frame (the editor's own rule).
  function validateLine(points, width, height, maxPoints) {
    var n = points.length, i, j, p;
    for (i = 0; i < n; i++) {
      p = points[i];
      if (!isFinite(p[0]) || !isFinite(p[1])) return "line coordinates must be finite numbers";
    }
    var pts = points.filter(function (q, k) { return k === 0 || !same(q, points[k - 1]); });
    var m = pts.length, s = m - 1, bad = "line crosses or touches itself";
    if (m < 2) return "line needs at least 2 distinct points, got " + m;
    if (m > maxPoints) return "line has " + m + " points; at most " + maxPoints;
    var closed = m > 2 && same(pts[0], pts[s]);
    for (i = 0; i < s; i++) {
      for (j = i + 1; j < s; j++) {
        var a = pts[i], b = pts[i + 1], c = pts[j], d = pts[j + 1];
        if (j === i + 1) { if (folds(a, b, d)) return bad; continue; }
        if (closed && i === 0 && j === s - 1) { if (folds(c, a, b)) return bad; continue; }
        if (intersects(a, b, c, d)) return bad;
      }
    }
    for (i = 0; i < n; i++) if (points[i][0] < 0 || points[i][1] < 0) return "line coordinates must be >= 0";
    for (i = 0; i < n; i++) {
      p = points[i];
      if (p[0] > width || p[1] > height)
        return "line point " + (i + 1) + " (" + fmt(p[0]) + ", " + fmt(p[1]) + ") lies outside the " + width + "x" + height + " image";
    }
    return null;
  }

  // The "in" arrow of a line (pixels): from the middle of its first segment towards the
  // right-hand side walking from the first point to the last as drawn on the image (y
  // down), where a crossing counts "in" (edge.stream.lines; snapshots draw the same).
  function inArrow(points, width, height) {
    var pts = points.filter(function (q, k) { return k === 0 || !same(q, points[k - 1]); });
    if (pts.length < 2) return null;
    var a = pts[0], b = pts[1], dx = b[0] - a[0], dy = b[1] - a[1], l = Math.sqrt(dx * dx + dy * dy);
    var len = Math.max(16, Math.min(width, height) / 12);
    var mid = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
    return { from: mid, to: [mid[0] - dy / l * len, mid[1] + dx / l * len], len: len };
  }

  var SVGNS = "http://www.w3.org/2000/svg";
  function el(svg, tag, attrs, cls) {
    var e = document.createElementNS(SVGNS, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (cls) e.setAttribute("class", cls);
    svg.appendChild(e);
    return e;
  }
  // Draw a counting line into an SVG in image pixels: the polyline, a dot on its first
  // point, the "in" arrow and an optional label. Returns the <g>.
  function drawLine(svg, points, width, height, opts) {
    opts = opts || {};
    var g = el(svg, "g", {}, "counting-line" + (opts.invalid ? " invalid" : ""));
    if (opts.name != null) g.dataset.line = opts.name;
    if (!points.length) return g;
    el(g, "polyline", { points: points.map(function (p) { return p[0] + "," + p[1]; }).join(" ") }, "line");
    el(g, "circle", { cx: points[0][0], cy: points[0][1], r: Math.max(3, Math.min(width, height) / 120) }, "line-start");
    var arrow = inArrow(points, width, height);
    if (arrow) {
      var f = arrow.from, t = arrow.to, ux = (t[0] - f[0]) / arrow.len, uy = (t[1] - f[1]) / arrow.len;
      var h = arrow.len * 0.35;
      el(g, "line", { x1: f[0], y1: f[1], x2: t[0], y2: t[1] }, "line-arrow");
      el(g, "polygon", { points: [t, [t[0] - ux * h - uy * h / 2, t[1] - uy * h + ux * h / 2],
                                  [t[0] - ux * h + uy * h / 2, t[1] - uy * h - ux * h / 2]]
                                 .map(function (p) { return p[0] + "," + p[1]; }).join(" ") }, "line-head");
      el(g, "text", { x: t[0] + ux * 4, y: t[1] + uy * 4 + 5 }, "line-dir").textContent = "in";
    }
    if (opts.label) el(g, "text", { x: points[0][0] + 6, y: points[0][1] - 8 }, "line-label").textContent = opts.label;
    return g;
  }

  window.ZoneRules = { validate: validate, validateLine: validateLine, inArrow: inArrow, drawLine: drawLine };
})();
