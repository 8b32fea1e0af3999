"""Tokenizers: trained offline with `tokenizers` for from-scratch models, or a pretrained one from a local path.

Either way the tokenizer carries an image placeholder token and a chat template, so that prompts are
built the same way for every model. The template ends the prompt with a special token
(`<|assistant|>`), which keeps the boundary between prompt and answer clean: an answer such as
"Yes" tokenizes identically whatever precedes it, which choice scoring relies on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from vlmbench.errors import UserError

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN, USER_TOKEN, ASSISTANT_TOKEN)

# A multi-turn template: every turn is role token + text; assistant turns end with EOS.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>{{ message['content'] }}"
    "{% else %}<|assistant|>{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# Text that every trained tokenizer sees besides the caller's corpus, so digits, punctuation and
# common question words always have compact tokens.
_BASE_CORPUS = (
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1000 0.5 % $ , . ; : ? ! ' \" ( ) - / + = #",
    "Yes No yes no Is there a an the in image ? What is How many which color left right",
    "Answer the question using a single word or phrase. Describe this image. What is written in the image?",
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z a b c d e f g h i j k l m n o p q r s t u v w x y z",
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2):
    """Train a byte-level BPE tokenizer on `corpus` (offline) and wrap it for transformers.

    Byte-level means no input is ever unknown; a small vocabulary keeps the tiny demo LLMs small.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_BASE_CORPUS, *corpus], trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        additional_special_tokens=[IMAGE_TOKEN, USER_TOKEN, ASSISTANT_TOKEN],
        padding_side="left",
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def load_tokenizer(path: str | Path):
    """Load a tokenizer saved with a checkpoint or a pretrained one from a local path, as it is,
    adding only the image placeholder (and a pad token) when it lacks them."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.exists():
        raise UserError(f"tokenizer not found at {path}: pass a directory holding tokenizer.json / tokenizer_config.json")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the tokenizer at {path}: {exc}") from None
    added = []
    if IMAGE_TOKEN not in tok.get_vocab():
        added.append(IMAGE_TOKEN)
    if added:
        tok.add_special_tokens({"additional_special_tokens": added})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if tok.chat_template is None:
        tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def format_prompt(tokenizer, question: str, with_image: bool = True) -> str:
    """The user turn with the image placeholder, rendered with the tokenizer's chat template
    and ending where the assistant's answer starts."""
    content = f"{IMAGE_TOKEN}\n{question}" if with_image else question
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
