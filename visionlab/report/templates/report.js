// visionlab report: draw the interactive figures and mark the section in view in the navigation.
(function () {
  "use strict";
  // Each <script type="application/json" data-plot="ID"> holds a plotly figure for <div id="ID">;
  // its strings were HTML-escaped for plotly, which shows them as text.
  document.querySelectorAll("script[data-plot]").forEach(function (node) {
    var target = document.getElementById(node.getAttribute("data-plot"));
    if (!target) return;
    if (typeof Plotly === "undefined") {
      target.textContent = "plotly.js is missing from this report; the static figures above show the same data.";
      return;
    }
    var figure = JSON.parse(node.textContent);
    var layout = Object.assign({}, figure.layout || {}, {autosize: true});
    delete layout.width;  // the page's CSS sizes the figure
    delete layout.height;
    Plotly.newPlot(target, figure.data, layout, {responsive: true, displaylogo: false});
  });

  if (!("IntersectionObserver" in window)) return;
  var links = {};
  document.querySelectorAll(".toc a[href^='#']").forEach(function (a) {
    links[a.getAttribute("href").slice(1)] = a;
  });
  var observer = new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      var link = links[entry.target.id];
      if (!link || !entry.isIntersecting) return;
      var level = link.closest("ul ul") ? ".toc ul ul a" : ".toc > ul > li > a";
      document.querySelectorAll(level).forEach(function (a) { a.classList.remove("active"); });
      link.classList.add("active");
    });
  }, {rootMargin: "0px 0px -70% 0px"});
  Object.keys(links).forEach(function (id) {
    var section = document.getElementById(id);
    if (section) observer.observe(section);
  });
})();
