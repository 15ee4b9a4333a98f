"""Item input features: word2vec annotation embeddings and log degree (paper Section 3.1 inputs).

The feature store is ``features.parquet``: one row per catalogue item (new items included), a
fixed-size float32 list column per vector feature and one column per scalar, with a manifest naming
each column's meaning, dimension and source. ``feature_matrix`` concatenates whatever is present,
in a fixed order, so the model's input projection adapts to the columns a dataset has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .io import column_matrix, vector_column, write_json, write_table

TOKEN = re.compile(r"[0-9a-z]+(?:'[a-z]+)?")
VECTOR_COLUMNS = ("annotation", "visual")  # concatenation order of vector features
SCALAR_COLUMNS = ("has_image", "log_degree")  # then scalars


@dataclass
class FeatureConfig:
    word2vec_dim: int = 256  # paper: 256-d annotation embeddings
    word2vec_epochs: int = 30  # small catalogues need many passes over few short "sentences"
    word2vec_window: int = 20  # an item's annotation is a bag of words: the window spans all of it
    word2vec_min_count: int = 1  # rare tags are exactly the informative ones
    seed: int = 0  # with a seed, gensim runs one worker so the vectors are deterministic


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(str(text).lower())


def item_annotations(titles, texts) -> list[list[str]]:
    """Each item's annotation: the words of its title and its free text."""
    return [tokenize(f"{t or ''} {x or ''}") for t, x in zip(titles, texts)]


def train_word2vec(corpus: list[list[str]], config: FeatureConfig):
    """gensim Word2Vec (skip-gram) over the catalogue's annotations, deterministic for a seed."""
    from gensim.models import Word2Vec

    sentences = [s for s in corpus if s]
    if not sentences:
        return None
    return Word2Vec(sentences=sentences, vector_size=config.word2vec_dim, window=config.word2vec_window,
                    min_count=config.word2vec_min_count, sg=1, workers=1, seed=config.seed,
                    epochs=config.word2vec_epochs).wv


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


def build_features(item_ids: np.ndarray, titles, texts, item_degree: np.ndarray,
                   config: FeatureConfig = FeatureConfig()) -> tuple[pa.Table, dict]:
    """The feature table and its manifest for every catalogue item.

    ``item_degree`` counts training interactions only, so held-out pairs never leak into features.
    """
    corpus = item_annotations(titles, texts)
    vectors = train_word2vec(corpus, config)
    annotation = mean_word_vectors(corpus, vectors, config.word2vec_dim)
    table = pa.table({
        "item_id": pa.array(np.asarray(item_ids, dtype=object), pa.string()),
        "annotation": vector_column(annotation),
        "log_degree": pa.array(np.log1p(np.asarray(item_degree, dtype=np.float64)).astype(np.float32)),
    })
    manifest = {"columns": {
        "annotation": {"dim": config.word2vec_dim, "source": "gensim Word2Vec (skip-gram) on title + text, "
                       "item = mean of its words' vectors", "vocabulary": 0 if vectors is None else len(vectors),
                       "items_without_words": int(sum(1 for c in corpus if not c))},
        "log_degree": {"dim": 1, "source": "log(1 + training interactions of the item)"},
    }}
    return table, manifest


def save_features(directory: str | Path, table: pa.Table, manifest: dict) -> Path:
    directory = Path(directory)
    write_table(directory / "features.parquet", table)
    write_json(directory / "features_manifest.json", manifest)
    return directory / "features.parquet"


def load_features(path: str | Path) -> pa.Table:
    return pq.read_table(path)


def feature_matrix(table: pa.Table) -> np.ndarray:
    """Concatenate the present feature columns in a fixed order. -> (N, F) float32"""
    parts = [column_matrix(table.column(c)) for c in VECTOR_COLUMNS if c in table.column_names]
    parts += [table.column(c).to_numpy().astype(np.float32)[:, None]  # (N,) -> (N, 1)
              for c in SCALAR_COLUMNS if c in table.column_names]
    if not parts:
        raise ValueError("feature table has no feature column")
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def feature_blocks(table: pa.Table) -> dict[str, np.ndarray]:
    """Each raw feature as its own matrix (for the feature-only baselines)."""
    blocks = {c: column_matrix(table.column(c)) for c in VECTOR_COLUMNS if c in table.column_names}
    for c in SCALAR_COLUMNS:
        if c in table.column_names:
            blocks[c] = table.column(c).to_numpy().astype(np.float32)[:, None]  # (N,) -> (N, 1)
    return blocks
