"""Item input features (paper Section 4): VGG16 visual embeddings, word2vec annotation embeddings
and the log degree, assembled into the feature table (the words: :mod:`pinsage.features.words`).

* ``annotation``: gensim Word2Vec (skip-gram, 256-d) trained on the catalogue's annotations (title and
  text words; for MovieLens: title words, genres and tags), seeded and single-threaded so it is
  deterministic; an item's vector is the mean of its known words' vectors (zero when none is known).
  ``word2vec_vectors`` loads pretrained vectors from a local word2vec-format file instead.
* ``visual`` + ``has_image``: VGG16 fc6 activations (4,096-d, see :mod:`pinsage.features.vgg`) of each item's
  image, when ``vgg_weights`` names a local torchvision ``vgg16`` weights file; zero and
  ``has_image = 0`` for items without a usable image. Without a weights file both are left out.
* ``log_degree``: log(1 + training interactions).

The feature store is ``features.parquet``: one row per catalogue item (new items included), a
fixed-size float32 list column per vector feature and one column per scalar, with a manifest naming
each column's meaning, dimension and source. ``feature_matrix`` concatenates whatever is present,
in a fixed order, so the model's input projection adapts to the columns a dataset has.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pinsage.features.vgg import LAYERS, extract_visual, load_vgg16
from pinsage.features.words import (
    item_annotations,
    load_word_vectors,
    mean_word_vectors,
    save_word_vectors,
    train_word2vec,
)
from pinsage.util.io import column_matrix, vector_column, write_json, write_table

VECTOR_COLUMNS = ("annotation", "visual")  # concatenation order of vector features
SCALAR_COLUMNS = ("has_image", "log_degree")  # then scalars


@dataclass
class FeatureConfig:
    word2vec_dim: int = 256  # paper: 256-d annotation embeddings
    word2vec_epochs: int = 30  # small catalogues need many passes over few short "sentences"
    word2vec_window: int = 20  # an item's annotation is a bag of words: the window spans all of it
    word2vec_min_count: int = 1  # rare tags are exactly the informative ones
    seed: int = 0  # with a seed, gensim runs one worker so the vectors are deterministic
    word2vec_vectors: str | None = None  # local word2vec-format file (.bin = binary): used instead of training
    vgg_weights: str | None = None  # local torchvision vgg16 state dict; None: no visual features
    vgg_layer: str = "fc6"  # the paper's visual embedding; "fc7" also available
    vgg_batch_size: int = 32
    image_workers: int = 0  # Pillow decode threads; 0 = one per core (at most 8)
    device: str = "auto"  # for VGG16: auto = GPU when there is one


def annotation_features(titles, texts, config: FeatureConfig, word_vectors=None,
                        save_vectors: str | Path | None = None) -> tuple[np.ndarray, dict]:
    """-> (N, dim) float32 annotation vectors and their manifest entry.

    ``word_vectors``: already fitted vectors to use as they are (cold start); ``save_vectors``: where
    to keep the vectors trained here (nothing is written for pretrained or given vectors).
    """
    corpus = item_annotations(titles, texts)
    if word_vectors is not None:
        vectors, dim = word_vectors, int(word_vectors.vector_size)
        source = "the run's fitted word vectors, item = mean of its known words' vectors"
    elif config.word2vec_vectors:
        vectors = load_word_vectors(config.word2vec_vectors)
        dim = int(vectors.vector_size)
        source = (f"pretrained word2vec vectors {Path(config.word2vec_vectors).name}, "
                  "item = mean of its known words' vectors")
    else:
        vectors = train_word2vec(corpus, config)
        dim = config.word2vec_dim
        source = "gensim Word2Vec (skip-gram) on title + text, item = mean of its words' vectors"
        if save_vectors is not None and vectors is not None:
            save_word_vectors(vectors, save_vectors)
    annotation = mean_word_vectors(corpus, vectors, dim)
    entry = {"dim": dim, "source": source, "vocabulary": 0 if vectors is None else len(vectors),
             "items_without_words": int(sum(1 for c in corpus if not c))}
    if config.word2vec_vectors:
        entry["file"] = str(config.word2vec_vectors)
        entry["items_without_known_words"] = int((~annotation.any(axis=1)).sum())
    return annotation, entry


def visual_features(image_paths, image_root, config: FeatureConfig,
                    log=print) -> tuple[np.ndarray, np.ndarray, dict] | tuple[None, None, str]:
    """-> (N, D) float32 visual vectors, (N,) int8 has_image, manifest entry; or (None, None, why
    skipped). Refuses (DatasetError) an image_path that is absolute or leaves ``image_root``."""
    if not config.vgg_weights:
        return None, None, ("no VGG16 weights given (--vgg-weights PATH / features.vgg_weights): "
                            "visual features skipped")
    paths = [] if image_paths is None else ["" if p is None or p != p else str(p).strip()  # None/NaN: none
                                          for p in image_paths]
    if not any(paths):
        return None, None, ("the dataset has no image_path values: visual features skipped although "
                            f"VGG16 weights were given ({config.vgg_weights})")
    if image_root is None:
        raise ValueError("image paths need the dataset directory they are relative to (image_root)")
    if config.vgg_layer not in LAYERS:
        raise ValueError(f"features.vgg_layer must be one of {LAYERS}, got {config.vgg_layer!r}")
    t0 = time.perf_counter()
    loaded = load_vgg16(config.vgg_weights)
    visual, has_image, report = extract_visual(
        loaded.model, image_root, paths, layer=config.vgg_layer, batch_size=config.vgg_batch_size,
        device=config.device, workers=config.image_workers, log=log)
    entry = {"dim": int(visual.shape[1]),
             "source": f"VGG16 {config.vgg_layer} (post-ReLU) of the item's image: shorter side 256, centre "
                       "crop 224, ImageNet normalisation; zero when the item has no usable image",
             "layer": config.vgg_layer, "weights": loaded.path, "weights_sha256": loaded.sha256,
             "images": report.as_dict(), "seconds": round(time.perf_counter() - t0, 1)}
    return visual, has_image, entry


def build_features(item_ids: np.ndarray, titles, texts, item_degree: np.ndarray,
                   config: FeatureConfig = FeatureConfig(), *, image_paths=None,
                   image_root: str | Path | None = None, log=print, word_vectors=None,
                   save_vectors: str | Path | None = None) -> tuple[pa.Table, dict]:
    """The feature table and its manifest for every catalogue item (new items included).

    ``item_degree`` counts training interactions only, so held-out pairs never leak into features.
    ``image_paths`` (one per item, "" for none) are relative to ``image_root``, the dataset directory.
    ``word_vectors`` / ``save_vectors``: see :func:`annotation_features`.
    """
    annotation, annotation_entry = annotation_features(titles, texts, config, word_vectors, save_vectors)
    visual, has_image, visual_entry = visual_features(image_paths, image_root, config, log=log)
    columns = {
        "item_id": pa.array(np.asarray(item_ids, dtype=object), pa.string()),
        "annotation": vector_column(annotation),
    }
    manifest: dict = {"columns": {"annotation": annotation_entry}}
    if visual is not None:
        columns["visual"] = vector_column(visual)
        columns["has_image"] = pa.array(has_image, pa.int8())
        manifest["columns"]["visual"] = visual_entry
        manifest["columns"]["has_image"] = {"dim": 1, "source": "1 when the item's image was read and "
                                            "embedded, 0 (with a zero visual vector) otherwise"}
    else:
        log(f"features: {visual_entry}")
        manifest["skipped"] = {"visual": visual_entry}
    columns["log_degree"] = pa.array(np.log1p(np.asarray(item_degree, dtype=np.float64)).astype(np.float32))
    manifest["columns"]["log_degree"] = {"dim": 1, "source": "log(1 + training interactions of the item)"}
    return pa.table(columns), manifest


def save_features(directory: str | Path, table: pa.Table, manifest: dict) -> Path:
    directory = Path(directory)
    write_table(directory / "features.parquet", table)
    write_json(directory / "features_manifest.json", manifest)
    return directory / "features.parquet"


def feature_matrix(table: pa.Table) -> np.ndarray:
    """Concatenate the present feature columns in a fixed order. -> (N, F) float32"""
    parts = [column_matrix(table.column(c)) for c in VECTOR_COLUMNS if c in table.column_names]
    parts += [table.column(c).to_numpy().astype(np.float32)[:, None]  # (N,) -> (N, 1)
              for c in SCALAR_COLUMNS if c in table.column_names]
    if not parts:
        raise ValueError("feature table has no feature column")
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def degree_column(table: pa.Table) -> int | None:
    """The column of ``log_degree`` in :func:`feature_matrix` (None when the table has none)."""
    if "log_degree" not in table.column_names:
        return None
    width = sum(table.schema.field(c).type.list_size for c in VECTOR_COLUMNS if c in table.column_names)
    width += sum(c in table.column_names for c in SCALAR_COLUMNS)
    return width - 1  # log_degree is the last scalar


def content_blocks(table: pa.Table) -> list[np.ndarray]:
    """The vector features (annotation, visual) as matrices: what content similarity compares."""
    return [column_matrix(table.column(c)) for c in VECTOR_COLUMNS if c in table.column_names]


def feature_blocks(table: pa.Table) -> dict[str, np.ndarray]:
    """Each raw feature as its own matrix (for the feature-only baselines)."""
    blocks = {c: column_matrix(table.column(c)) for c in VECTOR_COLUMNS if c in table.column_names}
    for c in SCALAR_COLUMNS:
        if c in table.column_names:
            blocks[c] = table.column(c).to_numpy().astype(np.float32)[:, None]  # (N,) -> (N, 1)
    return blocks
