// Zone polygon rules, mirroring the server (edge.kernels.geometry.validate_polygon,
// check_polygon_in_image and the fence API's 4..9 points): the server's check is the one
// that counts; this one only tells the user early.
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
  window.ZoneRules = { validate: validate };
})();
