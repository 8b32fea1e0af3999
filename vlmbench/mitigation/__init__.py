"""Inference-time hallucination mitigation (`vlmbench run --mitigation SPEC`, docs/mitigation.md).

A mitigation is a second pass over a task's samples, logged beside the plain one under
``<task>@mitigation`` (`MITIGATION_PASS`), so that the paired comparison uses exactly the same
samples: results.json's ``tasks.<task>.mitigation`` holds metric(mitigated), metric(plain) and
their paired difference with a bootstrap interval (McNemar for right/wrong metrics).

* `spec` -- parsing ``--mitigation`` and which tasks can take which mitigation (checked before any
  data is read or any model loaded);
* `vote` -- self-consistency: seeds per (run seed, question id, draw), answer keys, majority vote;
* `recheck` -- caption recheck: yes/no questions per named object, removal of unconfirmed ones;
* `passes` -- the mitigated pass itself (batches, logs, resume) and its results.json block.
"""

from vlmbench.mitigation.spec import MITIGATION_PASS, MitigationSpec, check_tasks, parse_mitigation

__all__ = ["MITIGATION_PASS", "MitigationSpec", "check_tasks", "parse_mitigation"]
