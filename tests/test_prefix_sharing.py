"""Prefix KV sharing (docs/prefix-sharing.md): the own VLM's shared path equals its unshared one for
every preset, the held state is never changed, and the runner's grouping, LRU, sharding and records."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tests.helpers import make_image
from vlmbench.errors import UserError
from vlmbench.modeling.compression.spec import parse_spec
from vlmbench.modeling.interface import PrefixSharing, protocol_mismatches
from vlmbench.modeling.presets import build_random, load_preset, preset_names
from vlmbench.modeling.vlm import VLM
from vlmbench.runner.engine import AnswerSettings, FeatureCache, Sharing, probe_batch_size, run_batches
from vlmbench.runner.plan import batches_for_rank, make_image_batches
from vlmbench.runner.prefix_cache import PrefixCache

PRESETS = preset_names()
SIZES = [
    (64, 64),
    (190, 64),
    (64, 130),
]  # different tile counts / native grids → prefixes of different lengths
QUESTIONS = ["Is there a dog?", "What is written here, in the top left corner of this image?", "A?"]
ROWS = [0, 0, 1, 2, 1, 0]  # the image each question of the batch is about (several per image)


@pytest.fixture(scope="module")
def models() -> dict[str, VLM]:
    out = {}
    for name in PRESETS:
        model = build_random(load_preset(name), seed=0).eval()
        with torch.no_grad():  # open Flamingo's tanh gates (0 at init), so the images matter to the answers
            for block in model.cross_attention:
                block.attn_gate.fill_(1.0)
                block.mlp_gate.fill_(1.0)
        out[name] = model
    return out


def _batch(model: VLM) -> tuple[list[str], list[Any], list[Any], list[str], list[Any]]:
    """(prompts, visual per row, states per row, suffixes, the distinct states) for ROWS."""
    visual = model.encode([model.prepare_image(make_image(w, h, seed=i)) for i, (w, h) in enumerate(SIZES)])
    prompts = [model.format_prompt(QUESTIONS[i % len(QUESTIONS)]) for i in range(len(ROWS))]
    splits = [model.split_prompt(p) for p in prompts]
    assert all(s is not None and s[0] + s[1] == p for s, p in zip(splits, prompts, strict=True))
    states = model.prefill([splits[0][0]] * len(visual), visual)
    return prompts, [visual[r] for r in ROWS], [states[r] for r in ROWS], [s[1] for s in splits], states


@pytest.mark.parametrize("name", PRESETS)
def test_shared_path_equals_unshared_for_every_preset(models: dict[str, VLM], name: str) -> None:
    model = models[name]
    assert isinstance(model, PrefixSharing) and not protocol_mismatches(model, PrefixSharing)
    prompts, visual, states, suffixes, distinct = _batch(model)
    held = [[t.clone() for t in (*s.keys, *s.values)] for s in distinct]
    for choices in (["Yes", "No"], ["Yes", "No", "Yes it is", "no way"]):  # single- and multi-token choices
        unshared = model.score_choices(None, prompts, choices, visual=visual)
        shared = model.score_choices_from(states, suffixes, choices)
        torch.testing.assert_close(shared, unshared, rtol=1e-4, atol=1e-4)
    for kwargs in ({}, {"do_sample": True, "temperature": 1.5, "seed": 3}):
        unshared_text = model.generate(None, prompts, max_new_tokens=6, visual=visual, **kwargs)
        assert model.generate_from(states, suffixes, max_new_tokens=6, **kwargs) == unshared_text
    for state, before in zip(distinct, held, strict=True):  # the held state is unchanged after use
        assert all(torch.equal(a, b) for a, b in zip((*state.keys, *state.values), before, strict=True))
    assert all(s.tokens > 0 and s.nbytes > 0 for s in distinct)


def test_prefix_lengths_differ_where_the_resolution_is_dynamic(models: dict[str, VLM]) -> None:
    *_, distinct = _batch(models["internvl-style"])
    assert len({s.tokens for s in distinct}) == 3  # so the masked left padding of the KV is exercised


def test_fastv_inside_the_llm_declines_and_compression_before_it_shares() -> None:
    model = build_random(load_preset("llava-1.5-style"), seed=0).eval()
    prompt = model.format_prompt("Is there a dog?")
    model.set_visual_tokens(parse_spec("prune-attn:0.5@2"))
    assert model.split_prompt(prompt) is None and "prune-attn" in (model.prefix_decline_reason() or "")
    model.set_visual_tokens(parse_spec("pool:2"))
    prefix, suffix = model.split_prompt(prompt) or ("", "")
    visual = model.encode([model.prepare_image(make_image(64, 64))])
    state = model.prefill([prefix], visual)[0]
    unshared = model.score_choices(None, [prompt], ["Yes", "No"], visual=visual)
    torch.testing.assert_close(
        model.score_choices_from([state], [suffix], ["Yes", "No"]), unshared, rtol=1e-4, atol=1e-4
    )
    assert model.last_call is not None and model.last_call.llm_visual_tokens == (visual[0].shape[0],)


def test_a_prompt_without_an_image_is_not_split(models: dict[str, VLM]) -> None:
    model = models["llava-1.5-style"]
    assert model.split_prompt(model.format_prompt("Just text.", n_images=0)) is None


# ---- runner ------------------------------------------------------------------------------------
class _State:
    def __init__(self, nbytes: int) -> None:
        self.nbytes, self.tokens = nbytes, 1


def test_lru_evicts_least_recently_used_by_bytes() -> None:
    cache = PrefixCache(capacity_bytes=100)
    cache.put("a", _State(40))
    cache.put("b", _State(40))
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("c", _State(40))
    assert "b" not in cache and "a" in cache and "c" in cache and cache.bytes == 80
    cache.put("huge", _State(101))  # larger than the budget: not kept, nothing evicted for it
    assert "huge" not in cache and len(cache) == 2
    assert cache.evictions == 1 and cache.peak_bytes == 80


def test_retain_keeps_only_the_states_the_last_batch_used() -> None:
    cache = PrefixCache(capacity_bytes=1000)
    for key in ("a", "b", "c"):
        cache.put(key, _State(10))
    cache.retain({"c", "not-held"})
    assert len(cache) == 1 and "c" in cache and cache.bytes == 10 and cache.evictions == 0


def _sample(qid: str, image: str, prompt: str = "Is there a dog?") -> SimpleNamespace:
    return SimpleNamespace(question_id=qid, image_key=image, image_keys=[image], prompt=prompt, meta={})


def test_image_batches_keep_groups_whole_and_are_deterministic() -> None:
    samples = [_sample(f"q{i}", f"img{i % 4}") for i in range(12)]  # 4 images × 3 questions, interleaved
    batches = make_image_batches(samples, 7, lambda s: (1,))
    groups = [[int(q[1:]) % 4 for q in b.question_ids] for b in batches]
    assert groups == [[0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3]]  # a third group would not fit: new batch
    big = make_image_batches([_sample(f"q{i}", "one") for i in range(5)], 2, lambda s: (1,))
    assert [len(b.question_ids) for b in big] == [2, 2, 1]  # a group larger than a batch fills batches
    assert make_image_batches(samples, 7, lambda s: (1,)) == batches


class _Log:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append_batch(self, records: list[dict[str, Any]]) -> None:
        self.records.extend(records)


def _pope_like(n_images: int, per_image: int) -> list[Any]:
    import io

    from vlmbench.tasks.base import Sample

    out = []
    for i in range(n_images):
        buffer = io.BytesIO()
        make_image(64 + 40 * (i % 2), 64, seed=i).save(buffer, format="PNG")
        for q in range(per_image):
            question = f"Is there a {['dog', 'red car', 'cat on a mat'][q % 3]} in the image?"
            out.append(
                Sample(f"{i}-{q}", f"img{i}", question, question, [], {}, image_bytes=buffer.getvalue())
            )
    return out


@pytest.mark.parametrize("mode", ["choices", "generate"])
def test_one_vs_two_ranks_identical_with_sharing_on(models: dict[str, VLM], mode: str) -> None:
    model = models["internvl-style"]
    samples = _pope_like(3, 5)
    settings = AnswerSettings(mode=mode, choices=("Yes", "No"), max_new_tokens=4, stop=("\n",))
    batches = make_image_batches(samples, 4, lambda s: (1,))  # groups of 5 span batches dealt to both ranks
    by_id = {s.question_id: s for s in samples}

    def answer(world: int) -> tuple[dict[str, Any], int]:
        rows, prefills = {}, 0
        for rank in range(world):
            log, sharing = _Log(), Sharing(enabled=True, cache=PrefixCache(1 << 30))
            run_batches(
                model,
                by_id,
                batches_for_rank(batches, rank, world),
                set(),
                settings,
                log,
                FeatureCache(),
                sharing=sharing,
            )
            rows.update(
                {
                    r["question_id"]: (r["prediction"], r.get("choice_logprobs"), r["error"])
                    for r in log.records
                }
            )
            prefills += sharing.stats.prefix_prefills
        return rows, prefills

    (one, one_prefills), (two, two_prefills) = answer(1), answer(2)
    assert one == two and len(one) == 15 and all(error is None for _, _, error in one.values())
    assert one_prefills == 3 and two_prefills > 3  # a group split across ranks is prefilled on each


def _run(tmp_path: Path, name: str, **kw: Any) -> dict[str, Any]:
    from vlmbench.runner.run import RunOptions, run_evaluation

    opts = RunOptions(
        model="llava-1.5-style",
        tasks=["pope"],
        synthetic_n=2,
        batch_size="8",
        output_dir=str(tmp_path),
        run_name=name,
        device="cpu",
        **kw,
    )
    run_dir = run_evaluation(opts)
    rows = [json.loads(line) for line in (run_dir / "samples" / "pope.jsonl").read_text().splitlines()]
    return {
        "results": json.loads((run_dir / "results.json").read_text()),
        "rows": {r["question_id"]: r for r in rows},
    }


def test_run_on_vs_off_gives_the_same_predictions_and_records_the_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(tmp_path / "cache"))
    on, off = _run(tmp_path, "on"), _run(tmp_path, "off", prefix_sharing=False)
    assert on["rows"].keys() == off["rows"].keys() and len(on["rows"]) == 36
    for qid, row in on["rows"].items():
        assert row["prediction"] == off["rows"][qid]["prediction"]
        for choice, lp in row["choice_logprobs"].items():
            assert lp == pytest.approx(off["rows"][qid]["choice_logprobs"][choice], abs=1e-4)
    shared, unshared = (
        on["results"]["tasks"]["pope"]["prefix_sharing"],
        off["results"]["tasks"]["pope"]["prefix_sharing"],
    )
    assert shared["path"] == "shared" and shared["prefix_prefills"] == shared["distinct_prefixes"] == 2
    assert shared["prefill_tokens_per_question"] == shared["limit_tokens_per_question"]
    assert shared["prefill_tokens_per_question"] < shared["unshared_tokens_per_question"]
    assert unshared["path"] == "unshared" and "--prefix-sharing off" in unshared["reason"]
    with pytest.raises(UserError, match="--prefix-sharing differs"):  # batches and numerics would differ
        _run(tmp_path, "on", prefix_sharing=False, resume=True)
    fastv = _run(tmp_path, "fastv", visual_tokens="prune-attn:0.5@2")["results"]["tasks"]["pope"][
        "prefix_sharing"
    ]
    assert fastv["path"] == "unshared" and "prune-attn" in fastv["reason"]


def test_batch_size_probe_runs_on_the_shared_path(models: dict[str, VLM]) -> None:
    samples = _pope_like(1, 2)
    settings = AnswerSettings(mode="choices", choices=("Yes", "No"), max_new_tokens=4, stop=())
    sharing = Sharing(enabled=True, cache=PrefixCache(1 << 20))
    assert probe_batch_size(models["llava-1.5-style"], samples, settings, limit=4, sharing=sharing) == 4


def test_a_batch_mixing_shared_and_declined_prompts_keeps_answers_in_order(
    models: dict[str, VLM], monkeypatch
) -> None:
    model = models["qwen2vl-style"]
    samples = _pope_like(2, 6)
    settings = AnswerSettings(mode="choices", choices=("Yes", "No"), max_new_tokens=4, stop=())
    by_id = {s.question_id: s for s in samples}
    batches = make_image_batches(samples, 12, lambda s: (1,))

    def answers(sharing: Sharing) -> dict[str, Any]:
        log = _Log()
        run_batches(model, by_id, batches, set(), settings, log, FeatureCache(), sharing=sharing)
        return {r["question_id"]: (r["prediction"], r["choice_logprobs"]) for r in log.records}

    unshared = answers(Sharing.off())
    real_split = model.split_prompt

    def split_prompt(prompt: str) -> tuple[str, str] | None:  # the protocol's parameter name
        return None if "cat" in prompt else real_split(prompt)

    monkeypatch.setattr(model, "split_prompt", split_prompt)
    mixed = Sharing(enabled=True, cache=PrefixCache(1 << 20))
    got = answers(mixed)
    assert got.keys() == unshared.keys()
    for qid, (prediction, logprobs) in got.items():
        assert prediction == unshared[qid][0]
        assert logprobs == pytest.approx(unshared[qid][1], abs=1e-4)
    assert mixed.stats.shared == 8 and mixed.stats.unshared == 4  # "cat on a mat" is every third question
    assert "split_prompt returned None" in next(iter(mixed.stats.reasons))
