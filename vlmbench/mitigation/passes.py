"""The mitigated pass: answering a task's samples again under ``--mitigation``, and its results.

`MitigatedAnswerer` has the signature of `vlmbench.runner.engine.run_batches`, so the runner drives
the mitigated pass exactly like the plain one and the controls (same batches, per-rank logs under
``<task>@mitigation``, fsync per batch, resume by question id). It reads the plain pass's records
(the runner finishes the plain pass on every rank first): recheck starts from the plain caption,
self-consistency breaks ties with the plain answer and, in choices mode, samples from the plain
pass's choice log-probabilities. A sample whose plain answer failed fails here too (the same error),
so the two passes stay paired.

How each sample is answered:

* **self-consistency, generate mode**: K calls of ``model.generate`` on the sample alone
  (``do_sample=True``, the spec's temperature and top_p, the task's max_new_tokens and stop strings),
  draw ``d`` seeded with `vote.draw_seed` (run seed, question id, d) -- one prompt per call because the
  model's generator is per call, so batching several samples would tie their draws to the batch;
  then `vote.majority` under the task's answer key.
* **self-consistency, choices mode**: no new inference. Each draw picks a choice from
  softmax(logprob / T) over the plain pass's choice log-probabilities, by inverse CDF of one uniform
  number per draw from `vote.uniform` (draw seed as above); votes are over the choice strings. This
  is the answer the choice distribution gives under sampling: as K grows its majority converges to
  the plain (argmax) answer, so it measures how often sampling noise overturns the argmax, and can
  only lower accuracy where the model is confidently right -- the literature's self-consistency is
  the generate-mode one (``--answer-mode generate``), see docs/mitigation.md.
* **recheck**: `recheck` on the plain caption; the yes/no questions of one sample are scored as one
  ``score_choices`` batch (their answers do not depend on the runner's batch size).

Every record keeps ``plain_prediction`` and what the method saw (draws and votes; the questions,
their log-probabilities and what was removed), and samples/<task>@mitigation.jsonl carries them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlmbench.errors import UserError
from vlmbench.mitigation import recheck as rc
from vlmbench.mitigation import vote as sc
from vlmbench.mitigation.spec import MITIGATION_PASS, RECHECK, MitigationSpec, row_takes
from vlmbench.runner.engine import (
    AnswerSettings,
    FeatureCache,
    ShardStats,
    describe_error,
    drive_batches,
    visual_for,
)
from vlmbench.tasks.base import MALFORMED_ERROR_PREFIX

RECORD_FIELDS: tuple[str, ...] = (
    "plain_prediction", "mitigated", "changed", "draws", "votes", "vote_tie", "recheck", "removed", "removal",
)  # fmt: skip
"""What a mitigated log record adds to the engine's fields; copied into the sample rows."""


def mitigation_pass(task: str) -> str:
    """The pass name of a task's mitigated answers (logs/ and samples/)."""
    from vlmbench.runner.controls import pass_name

    return pass_name(task, MITIGATION_PASS)


@dataclass
class MitigatedAnswerer:
    """Answers one rank's batches under a mitigation (the `run_batches` signature)."""

    spec: MitigationSpec
    seed: int
    scorer: Any
    plain: Mapping[str, Mapping[str, Any]]
    """The plain pass's log records by question id."""
    key: sc.AnswerKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = sc.answer_key(self.scorer)

    def __call__(
        self,
        model: Any,
        samples: Mapping[str, Any],
        batches: Sequence[Any],
        done: set[str],
        settings: AnswerSettings,
        out: Any,
        cache: FeatureCache,
        on_progress: Callable[[int], None] = lambda n: None,
    ) -> ShardStats:
        def answer(members: list[Any], todo: list[Any]) -> list[dict[str, Any]]:
            # each sample on its own (seeded per question and draw): the batch does not change an answer
            with torch.inference_mode():
                return [self.answer(model, sample, settings, cache) for sample in todo]

        return drive_batches(samples, batches, done, out, answer, on_progress)

    def answer(self, model: Any, sample: Any, settings: AnswerSettings, cache: FeatureCache) -> dict[str, Any]:
        """One sample's mitigated record."""
        qid = sample.question_id
        record: dict[str, Any] = {"question_id": qid, "prediction": "", "error": None}
        if sample.meta.get("error"):
            return {**record, "error": f"{MALFORMED_ERROR_PREFIX}{sample.meta['error']}"}
        plain = self.plain.get(qid)
        if plain is None:
            return {**record, "error": "no plain prediction to mitigate: rerun with --resume"}
        plain_text = str(plain.get("prediction") or "")
        record["plain_prediction"] = plain_text
        if plain.get("error"):
            return {**record, "error": f"the plain pass failed: {plain['error']}"[:500]}
        if not row_takes(self.spec, sample):
            return {**record, "prediction": plain_text, "mitigated": False}
        try:
            if self.spec.method == RECHECK:
                visual, info = visual_for(model, sample, cache)
                fields = self._recheck(model, sample, visual, plain_text)
            elif settings.mode == "choices":
                info, fields = {}, self._vote_choices(qid, plain, settings, plain_text)
            else:
                visual, info = visual_for(model, sample, cache)
                fields = self._vote_generated(model, sample, visual, settings, plain_text)
        except Exception as exc:  # noqa: BLE001 - recorded per sample, the run goes on
            return {**record, "error": describe_error(exc)}
        return {**record, **info, **fields, "mitigated": True}

    # ---- self-consistency --------------------------------------------------------------------
    def _vote_generated(
        self, model: Any, sample: Any, visual: Any, settings: AnswerSettings, plain: str
    ) -> dict[str, Any]:
        prompt = model.format_prompt(sample.prompt, n_images=len(sample.image_keys))
        draws = [
            model.generate(
                None, [prompt], max_new_tokens=settings.max_new_tokens, stop=settings.stop, do_sample=True,
                temperature=self.spec.temperature, top_p=self.spec.top_p,
                seed=sc.draw_seed(self.seed, sample.question_id, d), visual=[visual],
            )[0]
            for d in range(self.spec.k)
        ]  # fmt: skip
        return _vote_fields(sc.majority(draws, self.key, plain), draws, self.key(plain))

    def _vote_choices(
        self, qid: str, plain: Mapping[str, Any], settings: AnswerSettings, plain_text: str
    ) -> dict[str, Any]:
        logprobs = plain.get("choice_logprobs")
        if not isinstance(logprobs, Mapping) or not all(c in logprobs for c in settings.choices):
            raise ValueError("the plain pass logged no choice log-probabilities to sample from")
        row = [float(logprobs[c]) for c in settings.choices]
        uniforms = [sc.uniform(sc.draw_seed(self.seed, qid, d)) for d in range(self.spec.k)]
        draws = [settings.choices[i] for i in sc.sample_choices(row, self.spec.temperature, uniforms)]
        return _vote_fields(sc.majority(draws, lambda text: text, plain_text), draws, plain_text)

    # ---- recheck -----------------------------------------------------------------------------
    def _recheck(self, model: Any, sample: Any, visual: Any, caption: str) -> dict[str, Any]:
        categories = rc.categories_to_check(caption)
        checks: list[dict[str, Any]] = []
        if categories:
            n_images = len(sample.image_keys)
            prompts = [
                model.format_prompt(rc.question_for(c) + rc.QUESTION_SUFFIX, n_images=n_images)
                for c in categories
            ]
            scores = model.score_choices(None, prompts, list(rc.CHOICES), visual=[visual] * len(prompts))
            for category, (yes, no) in zip(categories, scores.tolist(), strict=True):
                checks.append({
                    "object": category, "question": rc.question_for(category), "confirmed": bool(yes >= no),
                    "logprob_yes": _finite(yes), "logprob_no": _finite(no),
                })  # fmt: skip
        removal = rc.remove_objects(caption, [c["object"] for c in checks if not c["confirmed"]])
        return {
            "prediction": removal.caption,
            "recheck": checks,
            "removed": removal.removed,
            "removal": removal.method,
            "changed": removal.caption != caption,
        }


def _vote_fields(result: sc.Vote, draws: list[str], plain_key: str | None) -> dict[str, Any]:
    """A vote's record; ``changed``: whether the answer differs from the plain one under the answer key
    (``"Yes."`` for a plain ``"Yes"`` is not a change)."""
    return {"prediction": result.prediction, "draws": draws, "votes": result.votes, "vote_tie": result.tie,
            "changed": result.key != plain_key}  # fmt: skip


def _finite(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


# ---- results ---------------------------------------------------------------------------------
def finish_mitigation(
    run_dir: Path,
    adapter: Any,
    samples: list[Any],
    plain_result: Mapping[str, Any],
    plain_rows: Sequence[Mapping[str, Any]],
    spec: MitigationSpec,
    settings: AnswerSettings,
    seed: int,
    gathered: Sequence[Mapping[str, Any]],
    wall: float,
) -> dict[str, Any]:
    """Score the mitigated pass, write ``samples/<task>@mitigation.jsonl`` and return results.json's
    ``tasks.<task>.mitigation`` block: metric(mitigated) (``metrics``, ``ci95``), metric(plain)
    (``plain``), and the paired difference mitigated - plain of every metric the samples recompute
    (``difference``, ``difference_ci95``: paired bootstrap; ``difference_p`` and ``difference_test``:
    McNemar for right/wrong metrics, else the bootstrap's)."""
    from vlmbench.metrics.binary import nest
    from vlmbench.report.metricspec import headline_of
    from vlmbench.report.paired import compare_task
    from vlmbench.runner.logs import read_logs
    from vlmbench.runner.results import score_records, scorer_record, write_samples

    task = adapter.config.name
    name = mitigation_pass(task)
    records = read_logs(run_dir, name)
    missing = [s.question_id for s in samples if s.question_id not in records]
    if missing:
        raise UserError(
            f"{len(missing)} samples of {name} have no prediction (e.g. {missing[:3]}); a rank stopped early: rerun with --resume"
        )
    scored, rows = score_records(adapter, samples, records, seed)
    for row in rows:
        record = records[row["question_id"]]
        row["mitigation"] = spec.text
        row.update({k: record[k] for k in RECORD_FIELDS if k in record})
        # choices mode: the logged log-probabilities are the plain pass's distribution, not this pass's answer
        row.pop("choice_logprobs", None)
    write_samples(run_dir, name, rows)
    entry = {
        "metrics": scored["metrics"],
        "ci95": scored["ci95"],
        "n": len(samples),
        "errors": sum(1 for r in rows if r["error"]),
    }
    mitigated = {**scorer_record(adapter, scored["metrics"]), **entry}
    comparison = compare_task(
        task, plain_result, mitigated, plain_rows, rows, headline_of(task, plain_result), seed=seed
    )
    kept = [m for m in comparison.metrics if m.recomputed and m.delta is not None]
    block: dict[str, Any] = {
        "spec": spec.text,
        "method": spec.method,
        "settings": {**spec.settings(), "answer_mode": settings.mode, **_method_notes(spec, settings)},
        "pass": name,
        **entry,
        "plain": nest({m.metric: m.baseline for m in kept}),
        "difference": nest({m.metric: m.delta for m in kept}),
        "difference_ci95": nest({m.metric: list(m.ci) for m in kept if m.ci is not None}),
        "difference_p": nest({m.metric: m.p for m in kept if m.p is not None}),
        "difference_test": nest({m.metric: m.test for m in kept if m.test}),
        "n_paired": comparison.n_matched,
        "mitigated_samples": sum(1 for r in rows if r.get("mitigated")),
        "changed": sum(1 for r in rows if not r["error"] and r.get("changed")),
    }
    if spec.method == RECHECK:
        checks = [c for r in rows for c in r.get("recheck") or []]
        block["objects_checked"] = len(checks)
        block["objects_unconfirmed"] = sum(1 for c in checks if not c["confirmed"])
        block["removal_methods"] = {
            m: sum(1 for r in rows if r.get("removal") == m) for m in ("phrase", "sentence", "caption")
        }
    computed = sum(int(part["samples"]) for part in gathered)
    block["throughput"] = {"samples_computed": computed, "wall_s": round(wall, 3)}
    return block


def _method_notes(spec: MitigationSpec, settings: AnswerSettings) -> dict[str, Any]:
    if spec.method == RECHECK:
        return {"question": rc.question_for("{object}"), "removes": "noun phrase (docs/mitigation.md)"}
    if settings.mode == "choices":
        return {
            "draws_from": "softmax(choice log-probabilities / T) of the plain pass",
            "tie_break": "plain answer, else first drawn",
        }
    return {
        "draws_from": "model.generate(do_sample=True), one call per draw",
        "tie_break": "plain answer, else first drawn",
    }


def cell_text(result: Mapping[str, Any], metric: str) -> str:
    """The terminal table's mitigation cell for a task's headline, e.g. ``0.812 +0.020 [-0.010, +0.050]``."""
    from vlmbench.report.metricspec import flatten, flatten_ci

    block = result.get("mitigation")
    if not isinstance(block, Mapping):
        return "-"
    value = flatten(block.get("metrics") or {}).get(metric)
    delta = flatten(block.get("difference") or {}).get(metric)
    ci = flatten_ci(block.get("difference_ci95")).get(metric)
    if value is None or delta is None:
        return "-"
    interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
    return f"{value:.3f} {delta:+.3f}{interval}"
