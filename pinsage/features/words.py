"""Annotation words and their vectors (paper Section 4: word2vec embeddings of the annotations).

An item's annotation is the words of its title and free text (for MovieLens: title words, genres and
tags). Vectors are gensim's skip-gram Word2Vec trained on the catalogue (seeded, one worker, so
deterministic), or pretrained vectors from a local word2vec-format file; an item's vector is the mean
of its known words' vectors, zero when none is known. Vectors are saved in word2vec's binary format,
never pickled.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pinsage.util.io import atomic_path

TOKEN = re.compile(r"[0-9a-z]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(str(text).lower())


def item_annotations(titles, texts) -> list[list[str]]:
    """Each item's annotation: the words of its title and its free text."""
    return [tokenize(f"{t or ''} {x or ''}") for t, x in zip(titles, texts)]


def train_word2vec(corpus: list[list[str]], config):
    """gensim Word2Vec (skip-gram) over the catalogue's annotations, deterministic for a seed."""
    from gensim.models import Word2Vec  # here: gensim (and its scipy) loads in seconds; only word2vec needs it

    sentences = [s for s in corpus if s]
    if not sentences:
        return None
    return Word2Vec(sentences=sentences, vector_size=config.word2vec_dim, window=config.word2vec_window,
                    min_count=config.word2vec_min_count, sg=1, workers=1, seed=config.seed,
                    epochs=config.word2vec_epochs).wv


def load_word_vectors(path: str | Path):
    """Pretrained vectors from a local word2vec-format file: binary when the name ends in .bin
    (or .bin.gz), text otherwise. Tokens are looked up lower-cased, as ``tokenize`` produces them."""
    from gensim.models import KeyedVectors  # here: as above

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"word2vec vectors file not found: {path}")
    binary = path.name.endswith((".bin", ".bin.gz"))
    try:
        return KeyedVectors.load_word2vec_format(str(path), binary=binary)
    except (ValueError, UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read as a word2vec {'binary' if binary else 'text'} file "
                         f"(name it *.bin for the binary format): {exc}") from None


def mean_word_vectors(corpus: list[list[str]], vectors, dim: int) -> np.ndarray:
    """Item vector = mean of its known words' vectors; zero when it has none. -> (N, dim) float32"""
    out = np.zeros((len(corpus), dim), dtype=np.float32)
    if vectors is None:
        return out
    for i, words in enumerate(corpus):
        known = [w for w in words if w in vectors.key_to_index]
        if known:
            out[i] = vectors[known].mean(axis=0)
    return out


def save_word_vectors(vectors, path: str | Path) -> None:
    """The fitted word vectors, in word2vec binary format (no pickle), written atomically.

    Items added after training are featurised with these (see :mod:`pinsage.serve.coldstart`): refitting
    word2vec on a changed catalogue would move every vector and make the new items' features
    meaningless to the trained model.
    """
    with atomic_path(path, ".bin") as tmp:
        vectors.save_word2vec_format(str(tmp), binary=True)
