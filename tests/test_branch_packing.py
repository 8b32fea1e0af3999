"""Branch packing (`pack_branches: true`): one copy of an image's visual tokens, its questions as
branches under a block-diagonal mask. The same loss and gradients as unpacked branches, no branch
reading another, labels on answer tokens only, and a short training run whose loss falls."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vlmbench.errors import UserError
from vlmbench.modeling.inputs import IGNORE_INDEX
from vlmbench.training import packing
from vlmbench.training.collate import Batch, Collator
from vlmbench.training.data import Conversation, load_dataset, prepare_data
from vlmbench.training.objectives import StageObjective, encode_rows
from vlmbench.training.recipe import DataSpec, StageConfig, parse_recipe

SUFFIX = "\nAnswer the question using a single word or phrase."
PRESETS = ("llava-1.5-style", "internvl-style", "qwen2vl-style", "flamingo-style")


EXISTENCE = DataSpec("existence", n=6, seed=1005, answer_suffix=SUFFIX, capitalize_yes_no=True)


@pytest.fixture(scope="module")
def existence_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_data({"existence": EXISTENCE}, tmp_path_factory.mktemp("existence"))["existence"]


@pytest.fixture(scope="module")
def conversations(existence_dir: Path) -> list[Conversation]:
    data = load_dataset(EXISTENCE, existence_dir)
    return sorted(data, key=lambda c: -len(c.turns))  # the scene with the most questions first


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    from vlmbench.modeling.presets import build_random, load_preset

    torch.manual_seed(0)
    return {name: build_random(load_preset(name), seed=0).eval() for name in PRESETS}


def _stage(**kw) -> StageConfig:
    return StageConfig(
        name="see",
        kind="sft",
        train=("vision", "projector", "llm"),
        data={"existence": 1.0},
        steps=1,
        batch_size=2,
        lr=1e-3,
        branches=True,
        **kw,
    )


def _packed(
    model, conversations: list[Conversation], max_branches: int = 16
) -> tuple[Batch, packing.PackedBatch]:
    batch = Collator(_stage(pack_branches=True, max_branches=max_branches), model, model.tokenizer)(
        conversations
    )
    assert batch.packs is not None
    return batch, packing.pack_branches(model, batch.rows, encode_rows(model, batch.images), batch.packs)


def _gradients(model, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


# ---- the same loss ---------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_packed_loss_and_gradients_equal_the_unpacked_branch_loss(preset: str, models, conversations) -> None:
    model = models[preset]
    items = conversations[:3]
    plain, packed = _stage(), _stage(pack_branches=True, max_branches=3)  # 3: conversations split in groups
    unpacked_batch = Collator(plain, model, model.tokenizer)(items)
    packed_batch = Collator(packed, model, model.tokenizer)(items)
    assert packed_batch.packs is not None and len(packed_batch.packs) > len(items)
    assert max(len(g) for g in packed_batch.packs) <= 3
    assert [r for g in packed_batch.packs for r in g] == list(range(len(unpacked_batch.rows)))
    assert packed_batch.rows == unpacked_batch.rows and packed_batch.tokens < unpacked_batch.tokens
    expected, _ = StageObjective(plain, model)(unpacked_batch)
    expected_grads = _gradients(model, expected)
    got, _ = StageObjective(packed, model)(packed_batch)
    got_grads = _gradients(model, got)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5), (float(got), float(expected))
    assert got_grads.keys() == expected_grads.keys() and any(n.startswith("vision.") for n in got_grads)
    for name, grad in expected_grads.items():
        assert torch.allclose(got_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_eager_attention_gives_the_same_loss(models, conversations) -> None:
    model = models["internvl-style"]
    items = conversations[:2]
    batch = Collator(_stage(pack_branches=True), model, model.tokenizer)(items)
    with torch.no_grad():
        sdpa, _ = StageObjective(_stage(pack_branches=True), model)(batch)
        model.llm.set_attn_implementation("eager")
        try:
            assert packing.pack_branches(
                model, batch.rows, encode_rows(model, batch.images), batch.packs
            ).attention_mask.is_floating_point()
            eager, _ = StageObjective(_stage(pack_branches=True), model)(batch)
            unpacked, _ = StageObjective(_stage(), model)(batch)
        finally:
            model.llm.set_attn_implementation("sdpa")
    assert torch.allclose(eager, sdpa, atol=1e-5) and torch.allclose(eager, unpacked, atol=1e-5)


def test_word_alignment_adds_the_same_term_to_the_packed_loss(models, conversations, existence_dir) -> None:
    from vlmbench.training.objectives import WordAlignmentHead
    from vlmbench.training.region_tags import category_name_tokens, load_region_labels

    model = models["internvl-style"]
    regions = load_region_labels([existence_dir])
    head = WordAlignmentHead(category_name_tokens(model.tokenizer, regions.categories))
    plain, packed = _stage(word_alignment=1.0), _stage(word_alignment=1.0, pack_branches=True)
    with torch.no_grad():
        expected, expected_stats = StageObjective(plain, model, head)(
            Collator(plain, model, model.tokenizer, regions)(conversations[:2])
        )
        got, stats = StageObjective(packed, model, head)(
            Collator(packed, model, model.tokenizer, regions)(conversations[:2])
        )
    assert torch.allclose(stats["word_alignment"], expected_stats["word_alignment"], atol=1e-6)
    assert torch.allclose(got, expected, atol=1e-5)


def test_each_branch_gets_its_unpacked_rows_logits(models, conversations) -> None:
    model = models["internvl-style"]
    batch, packed = _packed(model, conversations[:2])
    visual = encode_rows(model, batch.images)
    with torch.no_grad():
        logits = packing.packed_logits(model, packed)
        for b, group in enumerate(packed.groups):
            for k, index in enumerate(group):
                ids, labels = batch.rows[index]
                inputs = model.inputs_from_ids([ids], [labels], [visual[index]])
                inputs.pop("labels")
                row = model.llm(**inputs, use_cache=False).logits[0]
                mine = logits[b, packed.segments[b] == k]
                assert torch.allclose(mine, row[-mine.shape[0] :], atol=1e-5)
                # and its positions are the unpacked row's: restarting after the prefix
                prefix = int((packed.segments[b] == packing.PREFIX_SEGMENT).sum())
                assert packed.position_ids[b, packed.segments[b] == k].tolist() == list(
                    range(prefix, prefix + mine.shape[0])
                )


# ---- no branch reads another -----------------------------------------------------------------


def _branch_logits(model, packed: packing.PackedBatch, branch: int) -> torch.Tensor:
    with torch.no_grad():
        return packing.packed_logits(model, packed)[0, packed.segments[0] == branch]


def _causal(packed: packing.PackedBatch) -> packing.PackedBatch:
    """The control: the same packed sequence under a plain causal mask (branches see earlier ones)."""
    length = packed.segments.shape[1]
    causal = torch.ones(1, length, length, dtype=torch.bool).tril()
    return replace(packed, attention_mask=causal.unsqueeze(1))


@pytest.mark.parametrize("preset", ["internvl-style", "flamingo-style"])
def test_changing_one_branch_leaves_the_others_unchanged(preset: str, models, conversations) -> None:
    model = models[preset]
    conversation = conversations[0]
    assert len(conversation.turns) >= 3
    other = Conversation(
        conversation.image,
        (
            conversation.turns[0],
            ("Is there a giraffe wearing a hat in the image?" + SUFFIX, "No"),
            *conversation.turns[2:],
        ),
    )
    _, before = _packed(model, [conversation])
    _, after = _packed(model, [other])
    # one group, and branch 1 changed length (the later branches moved in the packed row)
    assert len(before.groups) == 1 and not torch.equal(before.segments, after.segments)
    for branch in (0, 2, len(conversation.turns) - 1):  # before and after the changed branch
        unchanged = (_branch_logits(model, after, branch) - _branch_logits(model, before, branch)).abs().max()
        assert unchanged < 1e-5, (branch, float(unchanged))
    # the control: under a causal mask a later branch reads branch 1, and the test sees it
    leaked = (
        (_branch_logits(model, _causal(after), 2) - _branch_logits(model, _causal(before), 2)).abs().max()
    )
    assert leaked > 1e-3, float(leaked)


def test_mask_is_block_diagonal_after_a_causal_prefix(models, conversations) -> None:
    model = models["llava-1.5-style"]
    _, packed = _packed(model, conversations[:2], max_branches=4)
    allowed = packed.attention_mask[:, 0]
    assert allowed.dtype == torch.bool  # sdpa
    for b in range(allowed.shape[0]):
        seg = packed.segments[b]
        for q in range(seg.shape[0]):
            keys = allowed[b, q].nonzero().flatten().tolist()
            if seg[q] == packing.PREFIX_SEGMENT:
                assert keys == list(range(q + 1))
            elif seg[q] >= 0:
                assert all(k <= q and seg[k] in (packing.PREFIX_SEGMENT, seg[q]) for k in keys)
                assert set(keys) >= {k for k in range(q + 1) if seg[k] in (packing.PREFIX_SEGMENT, seg[q])}
            else:  # padding attends to something (no all-masked row: no NaN) and is never attended to
                assert keys
                assert not allowed[b, seg >= packing.PREFIX_SEGMENT][:, q].any()


# ---- labels ----------------------------------------------------------------------------------


def test_labels_fall_on_answer_tokens_only(models, conversations) -> None:
    model = models["internvl-style"]
    tokenizer = model.tokenizer
    batch, packed = _packed(model, conversations[:3], max_branches=3)
    for b, group in enumerate(packed.groups):
        labelled = packed.labels[b] != IGNORE_INDEX
        seg = packed.segments[b]
        assert not labelled[seg < 0].any()  # prefix and padding
        for k, index in enumerate(group):
            mine = packed.labels[b, seg == k]
            answer = [t for t in batch.rows[index][1] if t != IGNORE_INDEX]
            assert mine[mine != IGNORE_INDEX].tolist() == answer  # exactly what the unpacked row labels
            question, reply = _turn_of(batch, conversations[:3], index)
            assert answer == [
                *tokenizer(reply, add_special_tokens=False)["input_ids"],
                tokenizer.eos_token_id,
            ]
            assert mine[0] == IGNORE_INDEX and labelled[seg == k].sum() == len(answer)
            # the labelled tokens are the branch's last ones: the question before them carries none
            assert not (mine[: -len(answer)] != IGNORE_INDEX).any()
            assert question.split("\n")[0] in tokenizer.decode(batch.rows[index][0])


def _turn_of(batch: Batch, conversations: list[Conversation], index: int) -> tuple[str, str]:
    turns = [t for c in conversations for t in c.turns]
    assert len(turns) == len(batch.rows)
    return turns[index]


def test_rows_that_do_not_share_the_image_are_refused(models, conversations) -> None:
    model = models["llava-1.5-style"]
    batch = Collator(_stage(pack_branches=True), model, model.tokenizer)(conversations[:2])
    assert batch.packs is not None
    mixed = [batch.packs[0][0], batch.packs[1][0]]  # the first rows of two different images
    with pytest.raises(UserError, match="does not share its group's prefix"):
        packing.pack_branches(model, batch.rows, encode_rows(model, batch.images), [mixed])


def test_branch_groups_split_evenly() -> None:
    assert packing.branch_groups(8, 16) == [list(range(8))]
    assert packing.branch_groups(20, 16, start=4) == [list(range(4, 14)), list(range(14, 24))]
    assert [len(g) for g in packing.branch_groups(7, 3)] == [3, 2, 2]
    assert packing.branch_groups(0, 16) == []


# ---- recipe and stage checks -----------------------------------------------------------------


def _recipe(**stage) -> dict:
    return {
        "name": "pack",
        "model": "llava-1.5-style",
        "seed": 0,
        "output_dir": "o",
        "tokenizer": {"vocab_size": 320, "corpus": ["e"]},
        "data": {"e": {"generator": "existence", "n": 2, "seed": 1005}},
        "stages": [
            {
                "name": "see",
                "kind": "sft",
                "train": ["llm"],
                "data": ["e"],
                "steps": 1,
                "batch_size": 1,
                "lr": 1e-3,
                **stage,
            }
        ],
    }


def test_recipe_validates_packing_options() -> None:
    stage = parse_recipe(_recipe(branches=True, pack_branches=True, max_branches=8), source="t").stages[0]
    assert stage.pack_branches and stage.max_branches == 8
    with pytest.raises(UserError, match="set branches: true as well"):
        parse_recipe(_recipe(pack_branches=True), source="t")
    with pytest.raises(UserError, match="max_branches applies with pack_branches"):
        parse_recipe(_recipe(branches=True, max_branches=8), source="t")
    with pytest.raises(UserError, match="max_branches must be >= 1"):
        parse_recipe(_recipe(branches=True, pack_branches=True, max_branches=0), source="t")
    with pytest.raises(UserError, match="must be true or false"):
        parse_recipe(_recipe(branches=True, pack_branches="yes"), source="t")
    # the defaults leave fingerprints of recipes written before packing as they were
    plain = parse_recipe(_recipe(branches=True), source="t")
    assert (
        plain.fingerprint() == parse_recipe(_recipe(branches=True, max_branches=16), source="t").fingerprint()
    )
    assert (
        plain.fingerprint()
        != parse_recipe(_recipe(branches=True, pack_branches=True), source="t").fingerprint()
    )


def test_stage_refuses_an_attention_that_takes_no_mask(models) -> None:
    model = models["llava-1.5-style"]
    model.llm.config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(UserError, match="use `branches: true` without pack_branches"):
            StageObjective(_stage(pack_branches=True), model)
    finally:
        model.llm.config._attn_implementation = "sdpa"


# ---- a short training run --------------------------------------------------------------------


def test_short_packed_training_run_lowers_the_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vlmbench.training import objectives
    from vlmbench.training.loop import train

    calls: list[int] = []
    original = objectives.pack_branches

    def counting(model, rows, visual, groups):
        calls.append(len(groups))
        return original(model, rows, visual, groups)

    monkeypatch.setattr(objectives, "pack_branches", counting)
    torch.set_num_threads(1)
    raw = {
        "name": "pack-run",
        "model": {
            "preset": "internvl-style",
            "overrides": {
                "vision": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
                "resolution": {"max_tiles": 2},
                "llm": {
                    "hidden_size": 32,
                    "num_layers": 2,
                    "num_heads": 2,
                    "num_kv_heads": 1,
                    "intermediate_size": 64,
                },
            },
        },
        "seed": 0,
        "save_dtype": "float32",
        "output_dir": str(tmp_path / "out"),
        "work_dir": str(tmp_path / "work"),
        "data_dir": str(tmp_path / "data"),
        "tokenizer": {"vocab_size": 320, "corpus": ["existence"]},
        "data": {
            "existence": {
                "generator": "existence",
                "n": 8,
                "seed": 1005,
                "capitalize_yes_no": True,
                "answer_suffix": SUFFIX,
            }
        },
        "stages": [
            {
                "name": "see",
                "kind": "sft",
                "train": ["projector", "llm"],
                "data": ["existence"],
                "branches": True,
                "pack_branches": True,
                "max_branches": 4,
                "steps": 16,
                "batch_size": 2,
                "lr": 1e-2,
                "log_every": 1,
            }
        ],
    }
    out = train(parse_recipe(raw, source="pack-test"))
    assert (out / "model.safetensors").exists()
    (stage,) = sorted((tmp_path / "work" / "stages").iterdir())
    rows = [json.loads(line) for line in (stage / "train_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows]
    assert len(losses) == 16 and calls and all(n >= 1 for n in calls)
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
