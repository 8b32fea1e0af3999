"""A held-out existence probe read during training: POPE-shaped yes/no questions about scenes of a seed
that neither the training sets nor the evaluation sets use, answered the way evaluation answers them
(the Yes/No choice the model scores higher). Logged beside the loss so that a stage's curve shows when
the model starts to look at the image, not only when its loss falls."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmbench.modeling.tokenizer import IMAGE_TOKEN
from vlmbench.training.data import load_dataset, load_image, prepare_data
from vlmbench.training.recipe import DataSpec

PROBE_SEED = 4001  # not a training seed of the shipped recipes (1001-1005), not an evaluation seed
PROMPT_SUFFIX = "\nAnswer the question using a single word or phrase."
_BATCH = 32


@dataclass(frozen=True)
class ProbeQuestion:
    image: Path
    prompt: str  # the question with the answer suffix, without the image placeholder
    positive: bool


class ExistenceProbe:
    """Balanced existence questions over `n_images` held-out scenes (generated once into `data_dir`), for
    the one model of a stage (its prepared images are kept between calls)."""

    def __init__(self, data_dir: Path, n_images: int, seed: int = PROBE_SEED) -> None:
        spec = DataSpec("existence", n=n_images, seed=seed, answer_suffix=PROMPT_SUFFIX, capitalize_yes_no=True)
        directory = prepare_data({"probe": spec}, Path(data_dir))["probe"]
        self.questions = [
            ProbeQuestion(conv.image, user.removeprefix(f"{IMAGE_TOKEN}\n"), answer == "Yes")
            for conv in load_dataset(spec, directory)
            for user, answer in conv.turns
        ]
        self._prepared: dict[Path, Any] = {}

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        """Accuracy, yes-ratio and ROC-AUC of (log p(Yes) − log p(No)) on the probe's questions."""
        from sklearn.metrics import roc_auc_score

        was_training = model.training
        model.eval()
        prepared = self._prepared
        margins: list[float] = []
        try:
            for start in range(0, len(self.questions), _BATCH):
                chunk = self.questions[start : start + _BATCH]
                for q in chunk:
                    if q.image not in prepared:  # pixels depend on the resolution strategy only: kept across calls
                        prepared[q.image] = model.prepare_image(load_image(q.image))
                prompts = [model.format_prompt(q.prompt) for q in chunk]
                scores = model.score_choices([prepared[q.image] for q in chunk], prompts, ["Yes", "No"])
                margins.extend((scores[:, 0] - scores[:, 1]).float().tolist())
        finally:
            model.train(was_training)
        gold = [q.positive for q in self.questions]
        said_yes = [m > 0 for m in margins]
        return {
            "probe_accuracy": sum(y == g for y, g in zip(said_yes, gold, strict=True)) / len(gold),
            "probe_yes_ratio": sum(said_yes) / len(gold),
            "probe_auc": float(roc_auc_score(gold, margins)),
        }


__all__ = ["PROBE_SEED", "ExistenceProbe"]
