// The console's progressive enhancement: times in the viewer's time zone, and charts over the tables when the
// Chart.js asset was built (without it the pages are the same tables, without charts).
(function () {
  "use strict";
  var timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  document.querySelectorAll("time[data-local]").forEach(function (element) {
    var moment = new Date(element.getAttribute("datetime"));
    if (!isNaN(moment.getTime())) {
      element.textContent = timeFormat.format(moment);
      element.title = element.getAttribute("datetime");
    }
  });

  var canvases = document.querySelectorAll("canvas[data-chart]");
  if (typeof window.Chart === "undefined") {
    canvases.forEach(function (canvas) { canvas.parentElement.hidden = true; });
    return;
  }
  // A palette with enough contrast on white; stacks beyond it repeat.
  var palette = ["#1f5fa8", "#c0392b", "#2e7d32", "#8e44ad", "#d35400", "#00838f", "#6d4c41", "#5d6d7e", "#ad1457"];
  canvases.forEach(function (canvas) {
    var source = document.getElementById(canvas.getAttribute("data-chart"));
    if (!source) { return; }
    var spec = JSON.parse(source.textContent);
    if (!spec.labels.length) { canvas.parentElement.hidden = true; return; }
    var datasets = spec.datasets.map(function (dataset, index) {
      var colour = palette[index % palette.length];
      return { label: dataset.label, data: dataset.data, backgroundColor: colour, borderColor: colour, spanGaps: true };
    });
    new window.Chart(canvas, {
      type: spec.type,
      data: { labels: spec.labels, datasets: datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { stacked: !!spec.stacked }, y: { stacked: !!spec.stacked, beginAtZero: true } },
        plugins: { legend: { position: "bottom" } }
      }
    });
  });
})();
