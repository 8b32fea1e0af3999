"""Reports, leaderboard and regression gate built from finished run directories.

Modules: ``runs`` (loading results.json + samples), ``metricspec`` (headlines, metric keys,
formatting), ``paired`` (per-sample paired comparison: McNemar, paired bootstrap), ``gate``
(`vlmbench check`), ``svg`` (hand-written charts), ``samples`` (sample-browser rows),
``templating`` (Jinja2 with autoescaping, safe JSON in <script>), ``html`` (the report,
``render_report``) and ``leaderboard`` (the static site).
"""
