"""Branch batches (one row per question, the image encoded once) and the word-alignment loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlmbench.modeling.tokenizer import IMAGE_TOKEN
from vlmbench.training.collate import Collator
from vlmbench.training.data import Conversation, load_dataset, prepare_data
from vlmbench.training.objectives import StageObjective, WordAlignmentHead, encode_rows
from vlmbench.training.recipe import DataSpec, StageConfig
from vlmbench.training.region_tags import category_name_tokens, load_region_labels

SUFFIX = "\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="module")
def existence(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Conversation], Path]:
    spec = DataSpec("existence", n=6, seed=1005, answer_suffix=SUFFIX, capitalize_yes_no=True)
    dirs = prepare_data({"existence": spec}, tmp_path_factory.mktemp("existence"))
    return load_dataset(spec, dirs["existence"]), dirs["existence"]


@pytest.fixture(scope="module")
def model():
    from vlmbench.modeling.presets import build_random, load_preset

    return build_random(load_preset("llava-1.5-style"), seed=0)


def _stage(**kw) -> StageConfig:
    return StageConfig(name="see", kind="sft", train=("projector", "llm"), data={"existence": 1.0}, steps=1,
                       batch_size=2, lr=1e-3, **kw)


def test_existence_set_is_balanced_and_answerable(existence) -> None:
    conversations, _ = existence
    for conversation in conversations:
        answers = [a for _, a in conversation.turns]
        assert answers.count("Yes") == answers.count("No") >= 1
        questions = [q for q, _ in conversation.turns]
        assert len(set(questions)) == len(questions)  # no category asked twice


def test_branches_give_one_question_per_row_and_loss_on_its_answer_only(existence, model) -> None:
    conversations, directory = existence
    regions = load_region_labels([directory])
    collate = Collator(_stage(branches=True, word_alignment=1.0), model, model.tokenizer, regions)
    batch = collate(conversations[:2])
    turns = [t for c in conversations[:2] for t in c.turns]
    assert len(batch.rows) == len(turns)
    image_id = model.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    eos = model.tokenizer.eos_token_id
    for (ids, labels), (question, answer) in zip(batch.rows, turns, strict=True):
        text = model.tokenizer.decode(ids)
        assert ids.count(image_id) == 1 and text.count("Is there") == 1  # the image and one question
        assert question.split(IMAGE_TOKEN + "\n")[-1] in text
        target = [t for t in labels if t != -100]
        assert target == [*model.tokenizer(answer, add_special_tokens=False)["input_ids"], eos]
    # rows of one conversation hold the same image object (encoded once) and its presence labels
    first = len(conversations[0].turns)
    assert len({id(i) for i in batch.images[:first]}) == 1 and batch.images[0] is not batch.images[first]
    assert batch.presence is not None and torch.equal(batch.presence[0], batch.presence[first - 1])


def test_encode_rows_encodes_each_image_object_once(existence, model) -> None:
    conversations, _ = existence
    collate = Collator(_stage(branches=True), model, model.tokenizer)
    batch = collate(conversations[:2])
    calls: list[int] = []
    original = model.encode

    def counting(images):
        calls.append(len(images))
        return original(images)

    model.encode = counting
    try:
        visual = encode_rows(model, batch.images)
    finally:
        del model.encode
    assert calls == [2] and len(visual) == len(batch.rows)
    assert visual[0] is visual[1]


def test_word_alignment_loss_falls_when_it_moves_the_visual_tokens(existence, model) -> None:
    conversations, directory = existence
    regions = load_region_labels([directory])
    stage = _stage(branches=True, word_alignment=1.0)
    head = WordAlignmentHead(category_name_tokens(model.tokenizer, regions.categories))
    batch = Collator(stage, model, model.tokenizer, regions)(conversations[:4])
    optimizer = torch.optim.Adam([*model.projector.parameters(), *head.parameters()], lr=3e-3)
    values = []
    for _ in range(60):
        aligned = head(model, batch.images, encode_rows(model, batch.images), batch.presence)
        values.append(float(aligned.detach()))
        optimizer.zero_grad()
        aligned.backward()
        optimizer.step()
    assert values[-1] < 0.6 * values[0]
    # and the objective adds it to the answer loss, reporting it
    loss, stats = StageObjective(stage, model, head)(batch)
    assert "word_alignment" in stats and float(loss) > float(stats["word_alignment"]) * stage.word_alignment


def test_recipe_refuses_branches_outside_align_and_sft() -> None:
    from vlmbench.errors import UserError
    from vlmbench.training.recipe import parse_recipe

    raw = {
        "name": "x", "model": "llava-1.5-style", "seed": 0, "output_dir": "o",
        "tokenizer": {"vocab_size": 320, "corpus": ["e"]},
        "data": {"e": {"generator": "existence", "n": 2, "seed": 1005}},
        "stages": [{"name": "lm", "kind": "lm_pretrain", "train": ["llm"], "data": ["e"], "steps": 1,
                    "batch_size": 1, "lr": 1e-3, "branches": True}],
    }
    with pytest.raises(UserError, match="branches and word_alignment apply to align / sft"):
        parse_recipe(raw, source="test")


def test_branch_loss_equals_the_unchunked_mean(existence, model) -> None:
    """Chunking branch rows by length changes nothing but the padding: the loss is the mean over every
    target token of the batch, as one forward over all rows gives it."""
    from vlmbench.training import objectives

    conversations, _ = existence
    stage = _stage(branches=True)
    batch = Collator(stage, model, model.tokenizer)(conversations)
    assert len(batch.rows) > objectives.BRANCH_CHUNK
    model.eval()
    with torch.no_grad():
        chunked, _ = StageObjective(stage, model)(batch)
        logits, labels = objectives.conversation_logits(model, batch.images, batch.rows)
        whole = objectives.lm_loss(logits, labels)
    assert torch.allclose(chunked, whole, atol=1e-5)
