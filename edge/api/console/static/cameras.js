// Cameras page: draw each camera's zones and counting lines (with their "in" arrow) over
// its latest frame (SVG in image pixels).
"use strict";
(function () {
  var SVGNS = "http://www.w3.org/2000/svg";
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
      var label = ln.task + "/" + ln.name + (ln.counts ? "  in " + ln.counts["in"] + " · out " + ln.counts.out : "");
      window.ZoneRules.drawLine(svg, pts, w, h, { name: ln.name, label: label });
    });
    frame.dataset.drawn = "1";
  }
  document.querySelectorAll(".cam .frame").forEach(function (frame) {
    var img = frame.querySelector("img");
    img.addEventListener("load", function () { draw(frame); });
    img.addEventListener("error", function () {
      img.hidden = true; frame.querySelector(".noframe").hidden = false; frame.dataset.drawn = "none";
    });
    if (img.complete && img.naturalWidth) draw(frame);
  });
})();
