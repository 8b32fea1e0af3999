/* Sample-browser filters for the vlmbench report (no dependencies, works from file://). */
(function () {
  "use strict";
  var dataNode = document.getElementById("report-data");
  var data = dataNode ? JSON.parse(dataNode.textContent) : null;
  window.vlmbenchReport = data ? Object.freeze(data) : null;

  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  var rows = Array.prototype.slice.call(document.querySelectorAll("#sample-table tbody tr.sample"));
  var counter = document.getElementById("sample-count");

  function apply() {
    var wanted = selects.map(function (s) { return [s.getAttribute("data-filter"), s.value]; });
    var shown = 0;
    rows.forEach(function (row) {
      var keep = wanted.every(function (pair) { return pair[1] === "" || row.getAttribute("data-" + pair[0]) === pair[1]; });
      row.hidden = !keep;
      if (keep) { shown += 1; }
    });
    if (counter) { counter.textContent = shown + " of " + rows.length + " samples shown"; }
  }

  selects.forEach(function (s) { s.addEventListener("change", apply); });
  apply();
})();
