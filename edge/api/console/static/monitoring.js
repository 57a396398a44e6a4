// Monitoring charts (uPlot, vendored): requests/errors, p50/p95, traffic, errors by code.
"use strict";
(function () {
  var root = document.getElementById("charts");
  if (!root) return;
  var palette = ["#1f6feb", "#c2261d", "#1a7f37", "#8250df", "#bf8700", "#0a7ea4", "#cf222e", "#6e7781"];

  function fmtBytes(v) {
    if (v == null) return "";
    var u = ["B", "kB", "MB", "GB", "TB"], i = 0;
    while (Math.abs(v) >= 1000 && i < u.length - 1) { v /= 1000; i++; }
    return (Math.round(v * 10) / 10) + " " + u[i];
  }
  function width(el) { return Math.max(320, el.clientWidth || el.parentNode.clientWidth - 16); }

  function chart(id, t, series, opts) {
    var el = document.getElementById(id);
    el.textContent = "";
    var s = [{}].concat(series.map(function (x, i) {
      return { label: x.label, stroke: x.color || palette[i % palette.length], width: 1.5,
               fill: x.fill || undefined, points: { show: t.length <= 70 },
               spanGaps: false, value: opts && opts.value };
    }));
    var axes = [{}, { size: 70, values: opts && opts.axis }];
    return new uPlot({ width: width(el), height: 220, series: s, axes: axes,
                       scales: { x: { time: true } }, legend: { live: true } },
                     [t].concat(series.map(function (x) { return x.data; })), el);
  }

  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) { var td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
    return tr;
  }

  var q = new URLSearchParams({ range: root.dataset.range });
  if (root.dataset.app) q.set("app", root.dataset.app);
  if (root.dataset.api) q.set("api", root.dataset.api);
  fetch(root.dataset.url + "?" + q.toString(), { credentials: "same-origin" })
    .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then(function (d) {
      window.consoleStats = d;
      var tot = d.totals;
      document.getElementById("totals").textContent =
        tot.requests.toLocaleString() + " requests, " + tot.errors.toLocaleString() + " errors" +
        (tot.p50_ms != null ? ", p50 " + tot.p50_ms.toFixed(1) + " ms, p95 " + tot.p95_ms.toFixed(1) + " ms" : "") +
        " over the last " + d.range + " (buckets of " + (d.bucket_s / 60) + " min)";
      chart("chart-requests", d.t, [
        { label: "requests", data: d.requests, fill: "rgba(31,111,235,.08)" },
        { label: "errors", data: d.errors, color: "#c2261d" }]);
      chart("chart-latency", d.t, [
        { label: "p50 ms", data: d.p50_ms }, { label: "p95 ms", data: d.p95_ms, color: "#bf8700" }]);
      chart("chart-traffic", d.t, [
        { label: "request bytes", data: d.request_bytes },
        { label: "response bytes", data: d.response_bytes, color: "#1a7f37" }],
        { value: function (u, v) { return fmtBytes(v); },
          axis: function (u, vals) { return vals.map(fmtBytes); } });
      var codes = Object.keys(d.codes);
      chart("chart-codes", d.t, codes.length ? codes.map(function (c, i) {
        return { label: "code " + c, data: d.codes[c], color: palette[(i + 1) % palette.length] };
      }) : [{ label: "no errors", data: d.t.map(function () { return 0; }) }]);
      var body = document.querySelector("#stats-table tbody");
      body.textContent = "";
      d.table.forEach(function (r) {
        var tr = row([r.app, r.api || "(unknown path)", r.requests.toLocaleString(), r.errors.toLocaleString(),
                      r.error_rate == null ? "" : (100 * r.error_rate).toFixed(1) + " %",
                      r.p50_ms == null ? "" : r.p50_ms.toFixed(1), r.p95_ms == null ? "" : r.p95_ms.toFixed(1),
                      fmtBytes(r.request_bytes), fmtBytes(r.response_bytes),
                      Object.keys(r.codes).map(function (c) { return c + "×" + r.codes[c]; }).join(" ")]);
        tr.dataset.app = r.app; tr.dataset.api = r.api || "";
        body.appendChild(tr);
      });
      if (!d.table.length) body.appendChild(row(["No requests in this period."]));
      root.dataset.ready = "1";
    })
    .catch(function (e) {
      document.getElementById("totals").textContent = "Could not load the statistics: " + e.message;
      root.dataset.ready = "error";
    });
})();
