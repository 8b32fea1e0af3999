"""Training data: generating the synthetic sets, reading LLaVA conversations and preference pairs,
turning conversations into token ids with the loss on assistant tokens only, and mixing data sets.

Formats (what the generators in `vlmbench.data.synth` write):
- conversations (captions.json, instructions.json, documents.json): LLaVA records
  ``{"id", "image": "images/x.png", "conversations": [{"from": "human", "value": "<image>\\nQ"},
  {"from": "gpt", "value": "A"}, ...]}``; the first human turn carries the `<image>` placeholder.
- preferences.json: ``{"image", "prompt": "<image>\\nQ", "chosen", "rejected"}``.

Batches are a pure function of (seed, stage index, step), so a resumed stage sees exactly the batches
an uninterrupted one would, without saving any sampler state.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlmbench.errors import UserError
from vlmbench.modeling.tokenizer import IMAGE_TOKEN
from vlmbench.training.recipe import DataSpec

SPEC_FILE = "spec.json"
_FILES = {
    "captions": "captions.json",
    "instructions": "instructions.json",
    "documents": "documents.json",
    "preferences": "preferences.json",
    "existence": "existence.json",
    "attributes": "attributes.json",
    "grounding": "grounding.json",
}
_YES_NO = {"yes": "Yes", "no": "No"}
TRANSCRIBE_PROMPT = "List the fields of this document."

Segments = list[tuple[str, bool]]  # (text, is_target): the loss falls on target segments only


@dataclass(frozen=True)
class Conversation:
    """One image and its (user, assistant) turns; the first user turn holds `<image>`."""

    image: Path | None
    turns: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Preference:
    """One preference pair: the prompt (with `<image>`) and the preferred / dispreferred answers."""

    image: Path
    prompt: str
    chosen: str
    rejected: str


# ---- generation ------------------------------------------------------------------------------


def prepare_data(specs: dict[str, DataSpec], data_dir: Path) -> dict[str, Path]:
    """Generate every set not yet on disk (deterministic: same spec → same files); name → directory."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, spec in specs.items():
        target = data_dir / spec.cache_key()
        marker = target / SPEC_FILE
        if not marker.exists():
            tmp = Path(tempfile.mkdtemp(prefix=f".{spec.cache_key()}-", dir=data_dir))
            try:
                _generate(spec, tmp)
                (tmp / SPEC_FILE).write_text(json.dumps({"key": spec.cache_key()}) + "\n")
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        out[name] = target
    return out


def _generate(spec: DataSpec, out: Path) -> None:
    from vlmbench.data.synth import scenes

    if spec.generator == "captions":
        scenes.generate_training_captions(out, spec.seed, spec.n)
    elif spec.generator == "instructions":
        scenes.generate_instructions(out, spec.seed, spec.n)
    elif spec.generator == "preferences":
        scenes.generate_preference_pairs(out, spec.seed, spec.n, yes_share=spec.yes_share)
    elif spec.generator == "existence":
        scenes.generate_existence_questions(out, spec.seed, spec.n)
    elif spec.generator == "attributes":
        scenes.generate_attribute_questions(out, spec.seed, spec.n)
    elif spec.generator == "grounding":
        scenes.generate_grounding_questions(out, spec.seed, spec.n, spec.location_levels)
    elif spec.generator == "documents":
        generate_documents(out, spec.seed, spec.n, spec.width, spec.height)
    else:  # pragma: no cover - validated by the recipe
        raise UserError(f"unknown generator {spec.generator}")


def generate_documents(out: Path, seed: int, n: int, width: int = 256, height: int = 320) -> Path:
    """DocVQA-style training pages: `n` pages (the evaluation set's renderer, another seed) with two
    LLaVA records each: a transcription of the title and fields in reading order ("List the fields of
    this document."), and a conversation asking about every field in random order. Writes
    `out/documents.json` and the pages' character boxes (`annotations/glyphs_synth.json`, for
    glyph tagging)."""
    from vlmbench.data.synth.documents import render_page
    from vlmbench.data.synth.glyph_annotations import write_glyph_annotations
    from vlmbench.data.synth.text_render import FontBook

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([int(seed), 7])
    fonts = FontBook()
    records, pages = [], []
    for index in range(n):
        page = render_page(rng, width, height, fonts)
        name = f"images/doc_{index:06d}.png"
        page.image.save(out / name, format="PNG", optimize=False)
        pages.append((name.removeprefix("images/"), width, height, page.runs))
        order = rng.permutation(len(page.fields))
        turns = []
        for k, i in enumerate(order):
            field = page.fields[int(i)]
            turns.append({"from": "human", "value": (f"{IMAGE_TOKEN}\n" if k == 0 else "") + field.question})
            turns.append({"from": "gpt", "value": field.value})
        transcript = " ".join([f"{page.title}."] + [f"{f.key}: {f.value}." for f in page.fields])
        records.append(
            {
                "id": f"doc{index:06d}-read",
                "image": name,
                "conversations": [
                    {"from": "human", "value": f"{IMAGE_TOKEN}\n{TRANSCRIBE_PROMPT}"},
                    {"from": "gpt", "value": transcript},
                ],
            }
        )
        records.append({"id": f"doc{index:06d}-qa", "image": name, "conversations": turns})
    path = out / _FILES["documents"]
    path.write_text(json.dumps(records, indent=1) + "\n")
    write_glyph_annotations(out, pages, fonts)
    return path


# ---- reading ---------------------------------------------------------------------------------


def load_dataset(spec: DataSpec, directory: Path) -> list[Conversation] | list[Preference]:
    """Read a generated set and normalise it as the spec says (eval-style prompts and answers)."""
    path = Path(directory) / _FILES[spec.generator]
    if not path.exists():
        raise UserError(f"{path} is missing: delete {directory} and run again to regenerate it")
    records = json.loads(path.read_text())
    if spec.generator == "preferences":
        return [_preference(r, Path(directory), spec, i) for i, r in enumerate(records)]
    return [_conversation(r, Path(directory), spec, i) for i, r in enumerate(records)]


def parse_llava_turns(conversations: Sequence[dict[str, str]]) -> list[tuple[str, str]]:
    """LLaVA `conversations` → [(user, assistant), ...]; roles must alternate human/gpt."""
    if len(conversations) % 2 or not conversations:
        raise UserError("a LLaVA conversation needs alternating human/gpt turns (an even, non-zero number)")
    turns = []
    for k in range(0, len(conversations), 2):
        user, assistant = conversations[k], conversations[k + 1]
        if user.get("from") != "human" or assistant.get("from") != "gpt":
            raise UserError(
                f"turn {k // 2}: expected human then gpt, got {user.get('from')} then {assistant.get('from')}"
            )
        turns.append((str(user["value"]), str(assistant["value"])))
    return turns


def normalise_turn(user: str, answer: str, spec: DataSpec, index: int) -> tuple[str, str]:
    """Apply the spec's prompt conventions to one turn (see `DataSpec`)."""
    prefix = ""
    if user.startswith(IMAGE_TOKEN):
        prefix, user = f"{IMAGE_TOKEN}\n", user[len(IMAGE_TOKEN) :].lstrip("\n")
    short = len(answer.split()) <= spec.short_answer_words
    if short:
        if spec.answer_suffix and not user.endswith(spec.answer_suffix):
            user = user + spec.answer_suffix
        if spec.capitalize_yes_no:
            answer = _YES_NO.get(answer.strip().lower(), answer)
    elif spec.caption_prompts:
        user = spec.caption_prompts[index % len(spec.caption_prompts)]
    return prefix + user, answer


def _conversation(record: dict[str, Any], root: Path, spec: DataSpec, index: int) -> Conversation:
    turns = parse_llava_turns(record["conversations"])
    normalised = tuple(normalise_turn(u, a, spec, index + k) for k, (u, a) in enumerate(turns))
    if IMAGE_TOKEN not in normalised[0][0]:
        raise UserError(f"record {record.get('id', index)}: the first human turn must hold {IMAGE_TOKEN}")
    image = root / record["image"] if record.get("image") else None
    return Conversation(image, normalised)


def _preference(record: dict[str, Any], root: Path, spec: DataSpec, index: int) -> Preference:
    prompt, chosen = normalise_turn(record["prompt"], record["chosen"], spec, index)
    _, rejected = normalise_turn(record["prompt"], record["rejected"], spec, index)
    if IMAGE_TOKEN not in prompt:
        raise UserError(f"preference {index}: the prompt must hold {IMAGE_TOKEN}")
    return Preference(root / record["image"], prompt, chosen, rejected)


def load_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


# ---- conversations → tokens ------------------------------------------------------------------


def conversation_segments(tokenizer: Any, turns: Sequence[tuple[str, str]]) -> Segments:
    """Render turns with the tokenizer's chat template, split into prompt and target pieces.

    The first prompt piece equals `format_prompt(question)` (what evaluation feeds the model); each
    target piece is the assistant's answer plus the template's end-of-turn (EOS) text."""
    messages: list[dict[str, str]] = []
    segments: Segments = []
    rendered = ""
    for user, assistant in turns:
        messages.append({"role": "user", "content": user})
        with_prompt = _render(tokenizer, messages, generation_prompt=True)
        segments.append((_suffix_of(with_prompt, rendered), False))
        messages.append({"role": "assistant", "content": assistant})
        full = _render(tokenizer, messages, generation_prompt=False)
        segments.append((_suffix_of(full, with_prompt), True))
        rendered = full
    return segments


def conversation_pairs(tokenizer: Any, turns: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """One (prompt, target) pair per assistant turn: the prompt holds the whole history before it
    (rendered, ending where the answer starts) and the target is the answer text."""
    segments = conversation_segments(tokenizer, turns)
    pairs, history = [], ""
    for k in range(0, len(segments), 2):
        history += segments[k][0]
        pairs.append((history, turns[k // 2][1]))
        history += segments[k + 1][0]
    return pairs


def tokenize_segments(
    tokenizer: Any, segments: Segments, max_tokens: int | None = None
) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 outside target segments) for rendered segments."""
    ids: list[int] = []
    labels: list[int] = []
    for text, is_target in segments:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if is_target else [-100] * len(piece))
    if max_tokens is not None:
        ids, labels = ids[:max_tokens], labels[:max_tokens]
    return ids, labels


def text_only_segments(tokenizer: Any, conversation: Conversation, targets: str = "all") -> Segments:
    """The conversation in the chat format without the image placeholder (LM pre-training: the LLM
    learns the chat format and answering from its context). `targets`: "all" tokens, or only the
    "assistant" answers, which concentrates the loss on answering from the description in context."""
    turns = [(u.replace(f"{IMAGE_TOKEN}\n", "").replace(IMAGE_TOKEN, ""), a) for u, a in conversation.turns]
    segments = conversation_segments(tokenizer, turns)
    if targets == "assistant":
        return segments
    return [(text, True) for text, _ in segments]


def merge_by_image(conversations: Sequence[Conversation]) -> list[Conversation]:
    """One conversation per image holding the turns of all its records, long answers (captions,
    transcriptions) first. As LM pre-training text this teaches the LLM to answer questions about a
    scene from a description of it in its context — the skill it later needs with visual tokens."""
    grouped: dict[Any, list[tuple[str, str]]] = {}
    for conv in conversations:
        grouped.setdefault(conv.image, []).extend(conv.turns)
    out = []
    for image, turns in grouped.items():
        ordered = sorted(turns, key=lambda t: len(t[1].split()) <= 3)  # stable: long answers first
        out.append(Conversation(image, tuple(ordered)))
    return out


def caption_of(conversation: Conversation) -> str:
    return conversation.turns[0][1]


def corpus_texts(datasets: Sequence[Sequence[Conversation | Preference]], split_digits: bool) -> list[str]:
    """Text for training the tokenizer: every prompt and answer of the given sets."""
    texts: list[str] = []
    for data in datasets:
        for item in data:
            if isinstance(item, Preference):
                texts.extend([item.prompt, item.chosen, item.rejected])
            else:
                for user, assistant in item.turns:
                    texts.extend([user.replace(IMAGE_TOKEN, " "), assistant])
    if split_digits:
        texts = [_space_digits(t) for t in texts]
    return texts


def _space_digits(text: str) -> str:
    """'4821' → '4 8 2 1', so BPE learns no multi-digit tokens (numbers are read digit by digit)."""
    out = []
    for i, ch in enumerate(text):
        out.append(ch)
        if ch.isdigit() and i + 1 < len(text) and text[i + 1].isdigit():
            out.append(" ")
    return "".join(out)


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _suffix_of(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise UserError(
            "the tokenizer's chat template does not render conversations incrementally (a turn changes "
            "the text before it); training needs a template whose renderings extend each other"
        )
    return text[len(prefix) :]


# ---- mixing ----------------------------------------------------------------------------------


class MixtureSampler:
    """Batches drawn from several data sets with sampling weights; batch `step` is a pure function of
    (seed, stage index, step). With `distinct_key`, no two items of a batch share that key (e.g. the
    image, so in-batch contrastive negatives are real negatives)."""

    def __init__(
        self,
        datasets: dict[str, Sequence[Any]],
        weights: dict[str, float],
        seed: int,
        stage_index: int,
        distinct_key: Callable[[Any], Any] | None = None,
    ) -> None:
        self.names = [name for name in weights if len(datasets[name])]
        if not self.names:
            raise UserError("every data set of this stage is empty")
        self.datasets = datasets
        total = sum(weights[n] for n in self.names)
        self.probs = np.array([weights[n] / total for n in self.names])
        self.seed = seed
        self.stage_index = stage_index
        self.distinct_key = distinct_key

    def batch(self, step: int, size: int) -> list[Any]:
        rng = np.random.default_rng([self.seed, self.stage_index, step])
        out: list[Any] = []
        seen: set[Any] = set()
        attempts = 0
        while len(out) < size:
            name = self.names[int(rng.choice(len(self.names), p=self.probs))]
            data = self.datasets[name]
            item = data[int(rng.integers(len(data)))]
            attempts += 1
            if self.distinct_key is not None and attempts < 50 * size:
                key = self.distinct_key(item)
                if key in seen:
                    continue
                seen.add(key)
            out.append(item)
        return out


__all__ = [
    "Conversation",
    "MixtureSampler",
    "Preference",
    "Segments",
    "caption_of",
    "conversation_pairs",
    "conversation_segments",
    "corpus_texts",
    "generate_documents",
    "load_dataset",
    "load_image",
    "merge_by_image",
    "normalise_turn",
    "parse_llava_turns",
    "prepare_data",
    "text_only_segments",
    "tokenize_segments",
]
