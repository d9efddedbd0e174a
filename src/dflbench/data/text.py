"""IMDB sentiment (Maas et al. 2011) from the aclImdb folder layout, as token-id tensors for TextCNN.

Layout: `<root>/aclImdb/{train,test}/{neg,pos}/*.txt` (or `<root>` itself being the aclImdb folder); the
`unsup` reviews are ignored. Tokenizer: lowercase, `<br />` -> space, tokens = runs of `[a-z0-9']`. The vocabulary
comes from the TRAINING split only: the `vocab_size - 2` most frequent tokens with count >= `min_freq` (ties in
alphabetical order), after id 0 = `<pad>` and id 1 = `<unk>`. Each review becomes `max_len` ids: longer ones are
truncated (`truncate="post"` keeps the beginning, "pre" the end), shorter ones padded with 0 (`pad="post"` after
the text, "pre" before it). Labels: 0 = neg, 1 = pos.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from dflbench.errors import UserError

from .datasets import register_dataset

PAD, UNK = 0, 1
CLASSES = ("neg", "pos")
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
_TOKEN = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class TextData:
    """Train/test token ids `[N, max_len]` (int64, 0 = padding) with labels and the training vocabulary."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    vocab: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("<br />", " "))


def build_vocab(token_lists, vocab_size: int, min_freq: int = 1) -> tuple[str, ...]:
    """`<pad>`, `<unk>`, then the most frequent tokens (count >= min_freq, ties alphabetical), vocab_size in all."""
    if vocab_size < 3:
        raise UserError(f"vocab_size must be at least 3 (<pad>, <unk> and one token), got {vocab_size}")
    counts = Counter(t for tokens in token_lists for t in tokens)
    ranked = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return ("<pad>", "<unk>") + tuple(ranked[:vocab_size - 2])


def encode(tokens: list[str], index: dict[str, int], max_len: int, pad: str = "post",
           truncate: str = "post") -> list[int]:
    ids = [index.get(t, UNK) for t in tokens]
    if len(ids) > max_len:
        ids = ids[:max_len] if truncate == "post" else ids[len(ids) - max_len:]
    fill = [PAD] * (max_len - len(ids))
    return ids + fill if pad == "post" else fill + ids


def _locate(root: Path) -> Path:
    for cand in (root / "aclImdb", root):
        if (cand / "train" / "pos").is_dir() and (cand / "test" / "neg").is_dir():
            return cand
    raise FileNotFoundError(f"IMDB not found: expected {root}/aclImdb/{{train,test}}/{{neg,pos}}/*.txt "
                            f"(the aclImdb_v1.tar.gz layout); pass --data-dir or add --download")


def _read_split(folder: Path) -> tuple[list[list[str]], list[int]]:
    texts, labels = [], []
    for label, cls in enumerate(CLASSES):
        for f in sorted((folder / cls).glob("*.txt")):
            texts.append(tokenize(f.read_text(encoding="utf-8", errors="replace")))
            labels.append(label)
    if not texts:
        raise FileNotFoundError(f"no reviews (*.txt) under {folder}/neg and {folder}/pos")
    return texts, labels


def load_imdb(root: str | Path, max_len: int = 256, vocab_size: int = 20000, min_freq: int = 1,
              pad: str = "post", truncate: str = "post", download: bool = False) -> TextData:
    """Load and encode IMDB (module docstring); `download=True` fetches aclImdb_v1.tar.gz into `root` first."""
    if max_len < 1:
        raise UserError(f"max_len must be positive, got {max_len}")
    if pad not in ("pre", "post") or truncate not in ("pre", "post"):
        raise UserError(f"pad and truncate must be 'pre' or 'post', got {pad!r}, {truncate!r}")
    root = Path(root)
    if download and not (root / "aclImdb").is_dir():
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(IMDB_URL, str(root))
    folder = _locate(root)
    train_tokens, y_train = _read_split(folder / "train")
    test_tokens, y_test = _read_split(folder / "test")
    vocab = build_vocab(train_tokens, vocab_size, min_freq)
    index = {w: i for i, w in enumerate(vocab)}

    def enc(token_lists):
        return torch.tensor([encode(t, index, max_len, pad, truncate) for t in token_lists], dtype=torch.int64)

    return TextData("imdb", enc(train_tokens), torch.tensor(y_train), enc(test_tokens), torch.tensor(y_test),
                    CLASSES, vocab)


@register_dataset("imdb")
def _imdb(root: Path, download: bool, image_size: int) -> TextData:
    """The registry entry: `load_imdb` with its defaults (max_len 256, vocabulary 20000)."""
    return load_imdb(root, download=download)
