"""Visual-token compression (`--visual-tokens`) and `vlmbench sweep`: the operators' definitions on
toy inputs, exact token counts for every operator and preset, identity at ratio 1, determinism, the
run/resume contract and the sweep report."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers import make_image
from vlmbench.cli import main
from vlmbench.errors import UserError
from vlmbench.modeling.compression import tokens as ops
from vlmbench.modeling.compression.spec import kept_count, parse_spec
from vlmbench.modeling.presets import build_random, load_preset, preset_names
from vlmbench.modeling.vlm import VLM

PRESETS = preset_names()
IMAGE = (200, 120)


@pytest.fixture(scope="module")
def models() -> dict[str, VLM]:
    return {name: build_random(load_preset(name), seed=0).eval() for name in PRESETS}


def _with(model: VLM, spec: str, seed: int = 0) -> VLM:
    copied = copy.deepcopy(model)
    copied.set_visual_tokens(parse_spec(spec), seed=seed)
    return copied


# ---- the spec grammar ----------------------------------------------------------------------------
def test_parse_canonicalises_and_splits_by_stage() -> None:
    spec = parse_spec(" Pool:2 , tome:0.50, downsample:0.5, prune-attn:0.25@2")
    assert spec.text == "pool:2,tome:0.5,downsample:0.5,prune-attn:0.25@2"
    assert [op.name for op in spec.token_ops] == ["pool", "tome"]
    assert [op.name for op in spec.image_ops] == ["downsample"]
    assert spec.llm_op is not None and spec.llm_op.layer == 2
    assert not parse_spec("none") and parse_spec(None).text == "none"


@pytest.mark.parametrize(
    "text, message",
    [
        ("pool:0", "K (the pooling window side) must be a positive integer"),
        ("pool:1.5", "positive integer"),
        ("tome:0", "must be a number in (0, 1]"),
        ("random:1.5", "must be a number in (0, 1]"),
        ("prune-attn:0.5@0", "L (the LLM layer"),
        ("tome:0.5@2", "only prune-attn takes @L"),
        ("squash:2", "unknown operator 'squash'"),
        ("pool", "needs a value"),
        ("pool:2,,tome:0.5", "empty operator"),
        ("tome:0.5,pool:2", "put pool first"),
        ("prune-attn:0.5@2,random:0.5", "put it last"),
        ("max-tiles:2,max-tiles:4", "more than once"),
    ],
)
def test_bad_specs_exit_2_before_loading(text: str, message: str, tmp_path, capsys) -> None:
    with pytest.raises(UserError, match=None) as info:
        parse_spec(text)
    assert message in str(info.value)
    code = main(["run", "--model", "llava-1.5-style", "--tasks", "pope", "--output-dir", str(tmp_path), "--visual-tokens", text])
    assert code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was written


@pytest.mark.parametrize(
    "name, spec, reason",
    [
        ("blip2-style", "pool:2", "no 2-D grid"),
        ("flamingo-style", "pool:2", "no 2-D grid"),
        ("blip2-style", "prune-attn:0.5", "do not map to image patches"),
        ("qwen2vl-style", "prune-attn:0.5", "no CLS token"),
        ("flamingo-style", "prune-attn:0.5@2", "cross-attention"),
        ("llava-1.5-style", "prune-attn:0.5@9", "has 4 layers"),
        ("llava-1.5-style", "max-tiles:2", "cuts no tiles"),
        ("internvl-style", "max-pixels:4096", "native-resolution"),
    ],
)
def test_operator_a_model_cannot_take_is_refused(models, name: str, spec: str, reason: str) -> None:
    with pytest.raises(UserError, match=reason):
        _with(models[name], spec)


# ---- the operators on toy inputs -----------------------------------------------------------------
def test_pool_pads_a_grid_it_does_not_divide() -> None:
    x = torch.arange(9.0).view(9, 1)  # a 3x3 grid holding 0..8 row-major
    out = ops.pool(ops.TokenSet.of(x, ((3, 3),)), 2)
    # windows {0,1,3,4} {2,5} {6,7} {8}: edge windows average only what they cover
    assert out.tokens.flatten().tolist() == [2.0, 3.5, 6.5, 8.0]
    assert out.sizes.tolist() == [4.0, 2.0, 2.0, 1.0] and out.grids == ((2, 2),)


def test_tome_merge_equals_the_hand_computation() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0], [1.0, 1.0]])
    # A = rows 0, 2, 4; B = rows 1, 3. Best links: 0→1 and 2→3 (cosine ≈ 0.995), 4→1 (≈ 0.77).
    # 5 tokens at R=0.6 → 3: one round merges the two strongest links, size-weighted means.
    out = ops.tome(ops.TokenSet.of(x, None), 0.6)
    assert torch.allclose(out.tokens, torch.tensor([[1.0, 0.05], [0.05, 1.0], [1.0, 1.0]]))
    assert out.sizes.tolist() == [2.0, 2.0, 1.0]
    # R=0.2 → 1 token: rounds repeat; the survivor is the size-weighted mean of all five
    one = ops.tome(ops.TokenSet.of(x, None), 0.2)
    assert torch.allclose(one.tokens, x.mean(0, keepdim=True)) and one.sizes.tolist() == [5.0]


def test_tome_sizes_weight_later_rounds() -> None:
    # after a first merge (sizes 2 and 1), merging again weights by size
    merged = ops.TokenSet(torch.tensor([[0.0, 1.0], [3.0, 1.0]]), None, torch.tensor([2.0, 1.0]))
    out = ops.tome(merged, 0.5)
    assert torch.allclose(out.tokens, torch.tensor([[1.0, 1.0]])) and out.sizes.tolist() == [3.0]


def test_attention_pruning_keeps_the_top_r_of_a_known_map() -> None:
    scores = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.05, 0.7, 0.2, 0.6])
    x = torch.arange(8.0).view(8, 1)
    kept = ops.top_scored(ops.TokenSet.of(x, None, scores), 0.5)
    assert kept.tokens.flatten().tolist() == [1.0, 3.0, 5.0, 7.0]  # top 4 scores, original order kept


def test_fastv_keeps_the_tokens_the_last_prompt_token_attends_to_most(models, monkeypatch) -> None:
    import vlmbench.modeling.compression.own as own

    model = _with(models["llava-1.5-style"], "prune-attn:0.25@2")
    visual = model.encode([model.prepare_image(make_image(*IMAGE))])[0]  # 64 tokens
    prompt = [model.format_prompt("what is it?")]
    full = model.build_inputs(prompt, [visual], with_visual_mask=True)
    columns = full["visual_mask"][0].nonzero().squeeze(-1)
    wanted = [3, 10, 17, 20, 33, 41, 50, 55, 58, 59, 60, 61, 62, 63, 0, 1]  # 16 = 25% of 64
    known = torch.zeros(full["attention_mask"].shape, dtype=torch.float32)
    known[0, columns[wanted]] = torch.linspace(1.0, 0.5, len(wanted))
    seen = {}

    def fake(llm, layers, layer, **inputs):
        seen["layer"] = layer
        return known

    monkeypatch.setattr(own, "last_token_attention", fake)
    inputs, counts = model._llm_inputs(prompt, [visual])
    assert seen["layer"] == 2 and counts == [16]
    text = (~full["visual_mask"][0]).sum().item()
    assert inputs["inputs_embeds"].shape[1] == text + 16
    kept_embeds = inputs["inputs_embeds"][0]
    expected = visual[sorted(wanted)].to(kept_embeds.dtype)
    positions = inputs["position_ids"][0]
    # the kept visual tokens are exactly the wanted ones, in order, at their original positions
    vis_positions = full["position_ids"][0][columns[sorted(wanted)]]
    picked = torch.stack([kept_embeds[(positions == p).nonzero()[0, 0]] for p in vis_positions])
    assert torch.equal(picked, expected)


def test_fastv_probe_reads_layer_l_attention_of_the_last_token(models) -> None:
    from vlmbench.modeling.compression.attention import last_token_attention
    from vlmbench.modeling.vlm import _decoder_layers

    model = models["llava-1.5-style"]
    inputs = model.build_inputs([model.format_prompt("a?")], [torch.randn(4, 128)])
    eager = copy.deepcopy(model.llm)
    eager.set_attn_implementation("eager")
    reference = eager(**inputs, output_attentions=True, use_cache=False)
    got = last_token_attention(model.llm, _decoder_layers(model.llm), 2, **inputs)
    assert model.llm.config._attn_implementation == "sdpa"  # the probe switched back
    assert torch.allclose(got, reference.attentions[1][:, :, -1, :].mean(1), atol=1e-5)


# ---- exact token counts, every operator and preset -----------------------------------------------
SPECS = ["pool:2", "pool:3", "tome:0.5", "random:0.25", "prune-attn:0.3", "pool:2,random:0.5", "downsample:0.5",
         "max-tiles:2", "max-pixels:4096"]


def _expected(model: VLM, spec: str, base_grids: list[tuple[int, int]]) -> int:
    """The count by the definitions, from the uncompressed model's per-tile token grids."""
    grids, n = list(base_grids), sum(r * c for r, c in base_grids)
    for op in parse_spec(spec).token_ops:
        if op.name == "pool":
            k = int(op.value)
            grids = [(math.ceil(r / k), math.ceil(c / k)) for r, c in grids]
            n = sum(r * c for r, c in grids)
        else:
            n = max(1, math.floor(n * op.value + 0.5))
    return n


@pytest.mark.parametrize("name", PRESETS)
def test_token_counts_are_exactly_as_specified(models, name: str) -> None:
    base = models[name]
    image = make_image(*IMAGE)
    p = base.config.vision.patch_size
    for spec in SPECS:
        try:
            model = _with(base, spec)
        except UserError:
            continue  # refused operators are tested above
        prepared = model.prepare_image(image)
        visual = model.encode([prepared])[0]
        patch_grids = [(h // p, w // p) for w, h in prepared.plan.tile_sizes]
        token_grids = [model.projector.token_grid(g) or (1, model.projector.num_tokens(g)) for g in patch_grids]
        assert visual.shape[0] == _expected(model, spec, token_grids) == model.visual_tokens_for(prepared.plan), spec
        assert model.visual_tokens_reference(*IMAGE) == visual.shape[0], spec
        if spec.startswith("downsample"):
            assert prepared.plan == base.resolution.prepare(image.resize((100, 60)))[1]


def test_fastv_count_is_per_image_after_the_encoder(models) -> None:
    model = _with(models["internvl-style"], "pool:2,prune-attn:0.25@1")
    visual = model.encode([model.prepare_image(make_image(*IMAGE))])[0]
    model.generate(None, [model.format_prompt("q")], max_new_tokens=2, visual=[visual])
    assert model.last_call is not None and model.last_call.llm_visual_tokens == (kept_count(visual.shape[0], 0.25),)


# ---- ratio 1 changes nothing ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["llava-1.5-style", "internvl-style", "qwen2vl-style", "flamingo-style"])
@pytest.mark.parametrize("spec", ["pool:1", "tome:1", "random:1", "prune-attn:1@2"])
def test_ratio_one_gives_identical_predictions(models, name: str, spec: str) -> None:
    base = models[name]
    try:
        model = _with(base, spec)
    except UserError:
        pytest.skip(f"{name} does not take {spec}")
    images = [make_image(*IMAGE, seed=1), make_image(90, 140, seed=2)]
    prompts = [base.format_prompt("what?"), base.format_prompt("is it red?")]
    ref = base.encode_samples([base.prepare_image(i) for i in images])
    got = model.encode_samples([model.prepare_image(i) for i in images])
    assert all(torch.equal(a, b) for a, b in zip(ref, got, strict=True))
    assert model.generate(None, prompts, max_new_tokens=4, visual=got) == base.generate(None, prompts, max_new_tokens=4, visual=ref)
    assert torch.allclose(
        model.score_choices(None, prompts, ["Yes", "No"], visual=got), base.score_choices(None, prompts, ["Yes", "No"], visual=ref)
    )


# ---- determinism ---------------------------------------------------------------------------------
def test_random_subset_is_seeded_and_independent_of_batching(models) -> None:
    a, b = make_image(*IMAGE, seed=3), make_image(*IMAGE, seed=4)
    model = _with(models["llava-1.5-style"], "random:0.25", seed=7)
    alone = model.encode([model.prepare_image(a)])[0]
    batched = model.encode([model.prepare_image(b), model.prepare_image(a)])[1]
    assert torch.equal(alone, batched)
    again = _with(models["llava-1.5-style"], "random:0.25", seed=7).encode([model.prepare_image(a)])[0]
    other = _with(models["llava-1.5-style"], "random:0.25", seed=8).encode([model.prepare_image(a)])[0]
    assert torch.equal(alone, again) and not torch.equal(alone, other)


def _cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _rows(run_dir: Path, task: str = "pope") -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples" / f"{task}.jsonl").read_text().splitlines()]


RUN = ["run", "--model", "llava-1.5-style", "--tasks", "pope", "--synthetic-n", "4", "--limit", "12", "--no-report"]


def test_run_records_spec_tokens_and_prefill_and_resume_checks_the_spec(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(_cache(tmp_path)))
    out = ["--output-dir", str(tmp_path / "runs"), "--run-name", "r"]
    assert main([*RUN, *out, "--visual-tokens", "pool:2", "--batch-size", "5"]) == 0
    run_dir = tmp_path / "runs" / "r"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["visual_tokens"] == "pool:2"
    record = results["tasks"]["pope"]["compression"]
    assert record["visual_tokens"] == "pool:2" and record["llm_visual_tokens_mean"] == 16 and record["prefill_ms_mean"] > 0
    rows = _rows(run_dir)
    assert all(r["visual_tokens"] == 16 == r["llm_visual_tokens"] and r["prefill_s"] > 0 for r in rows)
    capsys.readouterr()
    assert main([*RUN, *out, "--visual-tokens", "tome:0.5", "--batch-size", "5", "--resume"]) == 2
    assert "--visual-tokens differs" in capsys.readouterr().err
    assert main([*RUN, *out, "--batch-size", "5", "--resume"]) == 2  # no spec is another setting too


def test_batches_and_shards_give_the_same_predictions(tmp_path, monkeypatch) -> None:
    """Two batch sizes, and the two halves of a two-rank split answered by separate engines."""
    from vlmbench.runner.engine import AnswerSettings, FeatureCache, run_batches
    from vlmbench.runner.logs import PredictionLog, read_logs
    from vlmbench.runner.plan import batches_for_rank, make_batches
    from vlmbench.tasks.registry import load_task

    monkeypatch.setenv("VLMBENCH_CACHE", str(_cache(tmp_path)))
    samples, _ = load_task("pope").load(None, limit=12, synthetic_n=4)
    settings = AnswerSettings("choices", ("Yes", "No"), 4, ())
    model = build_random(load_preset("internvl-style"), seed=0).eval()
    model.set_visual_tokens(parse_spec("random:0.5,prune-attn:0.5@2"), seed=3)

    def answers(batch_size: int, world: int) -> dict[str, tuple]:
        batches = make_batches(samples, batch_size, lambda s: (0,))
        by_id = {s.question_id: s for s in samples}
        out: dict[str, tuple] = {}
        for rank in range(world):
            path = tmp_path / f"b{batch_size}w{world}" / "logs" / f"pope.rank{rank}.jsonl"
            with PredictionLog(path) as log:
                run_batches(copy.deepcopy(model), by_id, batches_for_rank(batches, rank, world), set(), settings, log, FeatureCache())
        for qid, r in read_logs(path.parent.parent, "pope").items():
            out[qid] = (r["prediction"], r["llm_visual_tokens"])
        return out

    one = answers(1, 1)
    assert one == answers(1, 2)
    assert answers(4, 2) == one


# ---- sweep ---------------------------------------------------------------------------------------
def test_sweep_runs_every_point_resumes_and_reports(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("VLMBENCH_CACHE", str(_cache(tmp_path)))
    args = ["sweep", "--model", "llava-1.5-style", "--tasks", "pope", "--synthetic-n", "4", "--limit", "12",
            "--output-dir", str(tmp_path), "--name", "s", "--grid", "none; pool:2; random:0.25; prune-attn:0.25"]
    assert main(args) == 0
    sweep_dir = tmp_path / "s"
    assert {p.name for p in sweep_dir.iterdir()} >= {"none", "pool2", "random0.25", "prune-attn0.25", "sweep.json", "sweep.html"}
    page = (sweep_dir / "sweep.html").read_text()
    assert page.count("<svg") == 2 and "prune-attn:0.25" in page and "Δ vs none" in page
    assert "pool:2</td><td>random:0.25" in page  # pool:2 and prune-attn:0.25 meet random:0.25 at 16 tokens
    before = (sweep_dir / "pool2" / "results.json").stat().st_mtime_ns
    assert main([*args, "--resume"]) == 0  # finished points are skipped
    assert (sweep_dir / "pool2" / "results.json").stat().st_mtime_ns == before
    capsys.readouterr()
    assert main([*args[:-1], "none; pool:4", "--resume"]) == 2
    assert "grid differ" in capsys.readouterr().err
    assert main([*args]) == 2  # exists without --resume


@pytest.mark.parametrize("grid, message", [("pool:2; tome:0.5", "no 'none' point"), ("none; pool:2; pool:2", "more than once"),
                                           ("none;; pool:2", "empty point"), ("none; pool:x", "positive integer")])
def test_bad_grids_exit_2(grid: str, message: str, tmp_path, capsys) -> None:
    code = main(["sweep", "--model", "llava-1.5-style", "--tasks", "pope", "--output-dir", str(tmp_path), "--grid", grid])
    assert code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_sweep_report_escapes_what_it_reads(tmp_path) -> None:
    from vlmbench.report.sweep import render_sweep_report

    sweep_dir = tmp_path / "s"
    (sweep_dir / "none" / "samples").mkdir(parents=True)
    (sweep_dir / "sweep.json").write_text(json.dumps({"grid": [{"run": "none", "visual_tokens": "none"}, {"run": "../x", "visual_tokens": "<b>"}]}))
    task = {"metrics": {"exact": 0.5}, "headline": {"metric": "exact", "higher_is_better": True}, "compression": {"llm_visual_tokens_mean": 4}}
    (sweep_dir / "none" / "results.json").write_text(json.dumps({"run_name": "none", "model": {"name": "<script>m</script>"}, "tasks": {"t<i>": task}}))
    page = render_sweep_report(sweep_dir).read_text()
    assert "<script>m" not in page and "&lt;script&gt;" in page and "t&lt;i&gt;" in page
    assert "<b>" not in page  # a point outside the sweep directory is not read


def test_a_backend_without_compression_is_refused() -> None:
    from vlmbench.modeling.compression.apply import apply_visual_tokens

    class Plain:
        pass

    with pytest.raises(UserError, match="does not implement visual-token compression"):
        apply_visual_tokens(Plain(), "pool:2", 0)
    assert apply_visual_tokens(Plain(), "none", 0) is None


@pytest.mark.slow
def test_two_gloo_processes_give_the_same_compressed_predictions(tmp_path) -> None:
    from tests.test_runner import _samples, _single_process_run, _two_gloo_processes

    args = [*RUN, "--batch-size", "3", "--visual-tokens", "random:0.5,prune-attn:0.5@2"]
    ref, cache = _single_process_run(tmp_path / "one", args)
    two = _two_gloo_processes(args, tmp_path / "two", cache, port=29533)
    key = lambda r: (r["question_id"], r["prediction"], r["choice_logprobs"], r["llm_visual_tokens"])  # noqa: E731
    assert sorted(map(str, map(key, _samples(ref, "pope")))) == sorted(map(str, map(key, _samples(two, "pope"))))


@pytest.mark.slow
def test_sweep_under_two_gloo_processes(tmp_path) -> None:
    import subprocess
    import sys

    from tests.test_runner import _env, _samples

    args = ["sweep", "--model", "llava-1.5-style", "--tasks", "pope", "--synthetic-n", "4", "--limit", "12",
            "--grid", "none; random:0.5", "--name", "s", "--no-report"]
    one = subprocess.run([sys.executable, "-m", "vlmbench", *args, "--output-dir", str(tmp_path / "one")],
                         env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29571",
                          "-m", "vlmbench", *args, "--output-dir", str(tmp_path / "two")],
                         env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    for point in ("none", "random0.5"):
        assert sorted(p.name for p in (tmp_path / "two" / "s" / point / "logs").iterdir()) == ["pope.rank0.jsonl", "pope.rank1.jsonl"]
        key = lambda r: (r["question_id"], r["prediction"], r["llm_visual_tokens"])  # noqa: E731
        a = sorted(map(key, _samples(tmp_path / "one" / "s" / point, "pope")))
        assert a == sorted(map(key, _samples(tmp_path / "two" / "s" / point, "pope")))
