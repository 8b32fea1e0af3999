/* vlmbench leaderboard: builds the table from the inlined data, sorts and filters it.
 * No dependencies, no network: the data comes from <script id="leaderboard-data">.
 * Text from the data is only ever inserted with textContent (never innerHTML). */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("leaderboard-data").textContent);
  var head = document.getElementById("board-head");
  var body = document.getElementById("board-body");
  var counter = document.getElementById("row-count");
  var controls = {
    text: document.getElementById("filter-text"),
    projector: document.getElementById("filter-projector"),
    resolution: document.getElementById("filter-resolution"),
    data: document.getElementById("filter-data")
  };
  var state = { key: null, descending: false };

  function fixed(value, digits) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "—";
  }

  function compact(value) {
    if (typeof value !== "number" || !isFinite(value)) { return "—"; }
    var units = [["B", 1e9], ["M", 1e6], ["k", 1e3]];
    for (var i = 0; i < units.length; i += 1) {
      if (Math.abs(value) >= units[i][1]) { return (value / units[i][1]).toPrecision(3).replace(/\.?0+$/, "") + units[i][0]; }
    }
    return String(Math.round(value * 100) / 100);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }

  function taskValue(row, task) {
    var cell = row.tasks[task.name];
    return cell && typeof cell.value === "number" ? cell.value : null;
  }

  /* Column definitions: key, label, how to sort, how to render a cell. */
  var columns = [
    { key: "model", label: "model", type: "text", value: function (r) { return r.model; }, render: function (r, td) {
      var link = el("a", "model-link", r.model);
      link.href = r.page;
      td.appendChild(link);
      var sub = el("div", "small muted", r.run_name + " · ");
      var report = el("a", "report-link", "report");
      report.href = r.report;
      sub.appendChild(report);
      td.appendChild(sub);
      if (!r.trained) {
        td.appendChild(el("span", "badge untrained", "RANDOM WEIGHTS"));
      }
    } },
    { key: "vision_encoder", label: "vision encoder", type: "text", className: "narrow", value: function (r) { return r.vision_encoder; } },
    { key: "projector", label: "projector", type: "text", value: function (r) { return r.projector; } },
    { key: "resolution", label: "resolution", type: "text", value: function (r) { return r.resolution; } },
    { key: "visual_tokens", label: "vis. tokens", title: "mean visual tokens per image", type: "number",
      value: function (r) { return r.visual_tokens; }, render: function (r, td) { td.textContent = compact(r.visual_tokens); } },
    { key: "params", label: "params", type: "number", value: function (r) { return r.params; },
      render: function (r, td) { td.textContent = compact(r.params); } }
  ];
  data.tasks.forEach(function (task) {
    columns.push({
      key: "task:" + task.name, label: task.name, sub: task.metric + (task.higher_is_better ? " ↑" : " ↓"),
      type: "number", higherIsBetter: task.higher_is_better,
      value: function (r) { return taskValue(r, task); },
      render: function (r, td) {
        var cell = r.tasks[task.name];
        if (!cell) { td.appendChild(el("span", "muted", "—")); return; }
        td.appendChild(el("span", "value", fixed(cell.value, 3)));
        if (cell.ci) { td.appendChild(el("div", "ci", "[" + fixed(cell.ci[0], 3) + ", " + fixed(cell.ci[1], 3) + "]")); }
        if (cell.warnings && cell.warnings.length) {
          var warn = el("span", "badge warning", "DEGENERATE");
          warn.title = cell.warnings.join("\n");
          td.appendChild(warn);
        }
        if (cell.synthetic) {
          var badge = el("span", "badge synthetic", "SYNTHETIC");
          badge.title = "measured on a synthetic data set" + (cell.source ? " (" + cell.source + ")" : "");
          td.appendChild(badge);
        }
      }
    });
  });
  (data.gain_columns || []).forEach(function (gc) {
    var task = data.tasks.filter(function (t) { return t.name === gc.task; })[0];
    var gainOf = function (r) {
      var cell = r.tasks[gc.task];
      var gain = cell && cell.gains ? cell.gains[gc.control] : null;
      return gain && typeof gain.value === "number" ? gain : null;
    };
    columns.push({
      key: "gain:" + gc.task + ":" + gc.control, label: gc.task + " visual gain",
      title: "metric(real) − metric(" + gc.control + " control), paired bootstrap 95% CI",
      sub: gc.control + " · " + (task ? task.metric : ""), type: "number", higherIsBetter: task ? task.higher_is_better : true,
      value: function (r) { var g = gainOf(r); return g ? g.value : null; },
      render: function (r, td) {
        var g = gainOf(r);
        if (!g) { td.appendChild(el("span", "muted", "—")); return; }
        td.appendChild(el("span", "value", (g.value >= 0 ? "+" : "") + fixed(g.value, 3)));
        if (g.ci) { td.appendChild(el("div", "ci", "[" + fixed(g.ci[0], 3) + ", " + fixed(g.ci[1], 3) + "]")); }
      }
    });
  });
  columns.push(
    { key: "throughput", label: "samples/s", type: "number", value: function (r) { return r.throughput; },
      render: function (r, td) { td.textContent = fixed(r.throughput, 2); } },
    { key: "created", label: "date", type: "text", className: "nowrap", value: function (r) { return r.created; },
      render: function (r, td) { td.textContent = r.created ? r.created.slice(0, 10) : "—"; td.title = r.created || ""; } },
    { key: "provenance", label: "data", type: "text", className: "nowrap", value: function (r) { return r.provenance.kind; },
      render: function (r, td) {
        var kind = r.provenance.kind;
        var tag = el("span", kind === "real" ? "badge real" : "badge synthetic", kind === "real" ? "real" : kind.toUpperCase());
        tag.title = r.provenance.sources.join(", ");
        td.appendChild(tag);
      } }
  );

  function compare(column, a, b) {
    var va = column.value(a);
    var vb = column.value(b);
    var missingA = va === null || va === undefined || va === "";
    var missingB = vb === null || vb === undefined || vb === "";
    if (missingA || missingB) { return missingA === missingB ? 0 : (missingA ? 1 : -1); } /* missing always last */
    var order = column.type === "number" ? va - vb : String(va).localeCompare(String(vb), undefined, { numeric: true, sensitivity: "base" });
    return state.descending ? -order : order;
  }

  function matches(row) {
    var text = controls.text.value.trim().toLowerCase();
    if (text) {
      var hay = [row.model, row.run_name, row.vision_encoder, row.projector, row.resolution, row.llm, row.preset]
        .filter(function (v) { return v; }).join(" ").toLowerCase();
      if (hay.indexOf(text) === -1) { return false; }
    }
    if (controls.projector.value && row.projector !== controls.projector.value) { return false; }
    if (controls.resolution.value && row.resolution !== controls.resolution.value) { return false; }
    if (controls.data.value && row.provenance.kind !== controls.data.value) { return false; }
    return true;
  }

  function renderBody() {
    var rows = data.rows.filter(matches);
    if (state.key) {
      var column = columns.filter(function (c) { return c.key === state.key; })[0];
      rows = rows.map(function (r, i) { return [r, i]; })
        .sort(function (x, y) { return compare(column, x[0], y[0]) || x[1] - y[1]; })
        .map(function (pair) { return pair[0]; });
    }
    body.textContent = "";
    rows.forEach(function (r) {
      var tr = el("tr");
      tr.setAttribute("data-slug", r.slug);
      columns.forEach(function (c) {
        var td = el("td", [c.type === "number" ? "num" : "", c.className || ""].join(" ").trim() || null);
        if (c.render) { c.render(r, td); } else { td.textContent = c.value(r) || "—"; }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    counter.textContent = rows.length + " of " + data.rows.length + " runs shown";
  }

  function renderHead() {
    head.textContent = "";
    columns.forEach(function (c) {
      var th = el("th", c.type === "number" ? "num" : null);
      th.setAttribute("data-key", c.key);
      var button = el("button", "sort", c.label);
      button.type = "button";
      if (c.title) { button.title = c.title; }
      button.addEventListener("click", function () {
        if (state.key === c.key) {
          state.descending = !state.descending;
        } else {
          state.key = c.key;
          /* first click shows the best first: high-to-low unless lower is better */
          state.descending = c.type === "number" && c.higherIsBetter !== false && c.key !== "visual_tokens" && c.key !== "params";
        }
        renderHead();
        renderBody();
      });
      th.appendChild(button);
      if (c.sub) { th.appendChild(el("div", "sub", c.sub)); }
      th.setAttribute("aria-sort", state.key === c.key ? (state.descending ? "descending" : "ascending") : "none");
      head.appendChild(th);
    });
  }

  function fillSelect(select, values) {
    values.filter(function (v, i) { return v && values.indexOf(v) === i; }).sort().forEach(function (v) {
      var option = el("option", null, v);
      option.value = v;
      select.appendChild(option);
    });
  }

  fillSelect(controls.projector, data.rows.map(function (r) { return r.projector; }));
  fillSelect(controls.resolution, data.rows.map(function (r) { return r.resolution; }));
  ["text", "projector", "resolution", "data"].forEach(function (name) {
    controls[name].addEventListener(name === "text" ? "input" : "change", renderBody);
  });
  renderHead();
  renderBody();
})();
