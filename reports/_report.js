/* Sample browser of the vlmbench report: thumbnails from the shared table, filters (works from file://). */
(function () {
  "use strict";
  function parsed(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }
  var data = parsed("report-data");
  window.vlmbenchReport = data ? Object.freeze(data) : null;

  /* Self-contained pages store each distinct image once (content key -> data: URI). */
  var thumbs = parsed("report-thumbs") || {};
  var safeUrl = /^data:image\/(png|jpeg|gif|webp);base64,[A-Za-z0-9+\/=]+$/;
  Array.prototype.forEach.call(document.querySelectorAll("#sample-table img[data-thumb]"), function (img) {
    var key = img.getAttribute("data-thumb");
    var url = Object.prototype.hasOwnProperty.call(thumbs, key) ? thumbs[key] : null;
    if (typeof url === "string" && safeUrl.test(url)) { img.src = url; }
  });

  /* A sample (tr.item) is followed by one tr.sample per run; it is shown while any of them is. */
  var groups = [];
  var rows = [];
  Array.prototype.forEach.call(document.querySelectorAll("#sample-table tbody tr"), function (tr) {
    if (tr.classList.contains("item")) {
      groups.push({ item: tr, rows: [] });
    } else if (tr.classList.contains("sample")) {
      rows.push(tr);
      if (groups.length) { groups[groups.length - 1].rows.push(tr); }
    }
  });
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  var counter = document.getElementById("sample-count");

  function apply() {
    var wanted = selects.map(function (s) { return [s.getAttribute("data-filter"), s.value]; });
    var shown = 0;
    rows.forEach(function (row) {
      var keep = wanted.every(function (pair) { return pair[1] === "" || row.getAttribute("data-" + pair[0]) === pair[1]; });
      row.hidden = !keep;
      if (keep) { shown += 1; }
    });
    groups.forEach(function (group) {
      group.item.hidden = group.rows.every(function (row) { return row.hidden; });
    });
    if (counter) { counter.textContent = shown + " of " + rows.length + " samples shown"; }
  }

  selects.forEach(function (s) { s.addEventListener("change", apply); });
  apply();
})();
