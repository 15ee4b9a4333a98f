"""Feature extraction: VGG16 visual embeddings (real loader, tiny weights), images, word2vec."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import make_community_dataset
from PIL import Image

from pinsage import pipeline
from pinsage.data.dataset import DatasetError
from pinsage.features import images, vgg
from pinsage.features.build import FeatureConfig, build_features, feature_blocks, feature_matrix
from pinsage.features.words import item_annotations, train_word2vec
from pinsage.util.io import column_matrix

TINY = dict(channels=(4, 8, 8, 16, 16), fc_dim=32, num_classes=10)  # VGG16 keys, narrow widths


def tiny_weights(path, seed=0):
    torch.manual_seed(seed)
    model = vgg.VGG16(**TINY)
    torch.save(model.state_dict(), path)
    return model.eval()


def make_images(root):
    """A few images of different sizes and modes, plus a corrupt and a truncated file."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(root / "img/a.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (240, 240, 4), dtype=np.uint8), "RGBA").save(root / "img/b.png")
    Image.fromarray(rng.integers(0, 256, (500, 260), dtype=np.uint8), "L").save(root / "img/c.png")
    Image.fromarray(rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)).convert("P").save(root / "img/d.gif")
    (root / "img/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    data = (root / "img/a.jpg").read_bytes()
    (root / "img/truncated.jpg").write_bytes(data[: len(data) // 3])
    return ["img/a.jpg", "", "img/b.png", "img/c.png", "img/missing.jpg", "img/d.gif",
            "img/corrupt.jpg", "img/truncated.jpg", ""]


# --- VGG16 architecture and weights -----------------------------------------------------------

def torchvision_vgg16_layout() -> dict[str, tuple[int, ...]]:
    """torchvision.models.vgg16 state_dict keys and shapes, written out from its architecture."""
    convs = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
             (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
             (26, 512, 512), (28, 512, 512)]
    out = {}
    for i, c_in, c_out in convs:
        out[f"features.{i}.weight"] = (c_out, c_in, 3, 3)
        out[f"features.{i}.bias"] = (c_out,)
    for i, d_in, d_out in [(0, 25088, 4096), (3, 4096, 4096), (6, 4096, 1000)]:
        out[f"classifier.{i}.weight"] = (d_out, d_in)
        out[f"classifier.{i}.bias"] = (d_out,)
    return out


def test_default_vgg16_has_torchvision_keys_and_shapes():
    with torch.device("meta"):  # the full 138M-parameter layout, no memory allocated
        model = vgg.VGG16()
    layout = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(layout) == list(torchvision_vgg16_layout())  # same keys, same order
    assert layout == torchvision_vgg16_layout()
    assert sum(np.prod(s) for s in layout.values()) == 138_357_544  # torchvision's vgg16 parameter count
    assert vgg.expected_keys() == list(layout)
    tiny = vgg.VGG16(**TINY)
    assert list(tiny.state_dict()) == list(layout)  # narrow variant: identical key names


def test_tiny_weights_load_from_file_and_give_deterministic_features(tmp_path):
    ref = tiny_weights(tmp_path / "vgg16_tiny.pth")
    loaded = vgg.load_vgg16(tmp_path / "vgg16_tiny.pth")
    assert loaded.model.channels == TINY["channels"] and loaded.model.fc_dim == 32
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    paths = make_images(tmp_path)
    logs = []
    feats, has, report = vgg.extract_visual(loaded.model, tmp_path, paths, batch_size=2, device="cpu",
                                            workers=2, log=logs.append)
    assert feats.shape == (len(paths), 32) and feats.dtype == np.float32
    assert has.tolist() == [1, 0, 1, 1, 0, 1, 0, 0, 0]
    assert (report.with_path, report.embedded, report.missing, report.corrupt) == (7, 4, 1, 2)
    assert report.examples["missing"] == ["img/missing.jpg"]
    assert any("missing" in line and "unreadable" in line for line in logs)
    assert np.all(feats[has == 0] == 0) and np.all(feats[has == 1].any(axis=1))
    assert np.all(feats >= 0)  # post-ReLU fc6
    # deterministic, independent of batch composition and thread count
    again, _, _ = vgg.extract_visual(loaded.model, tmp_path, paths, batch_size=3, device="cpu", workers=1,
                                     log=lambda s: None)
    np.testing.assert_allclose(again, feats, rtol=1e-5, atol=1e-6)
    # equals the reference model applied to the preprocessed image, at fc6 and fc7
    with torch.inference_mode():
        x = vgg.preprocess_batch(images.load_image(tmp_path / "img/a.jpg")[None], torch.device("cpu"))
        np.testing.assert_allclose(ref.embed(x, "fc6").numpy()[0], feats[0], rtol=1e-5, atol=1e-6)
        fc7, _, _ = vgg.extract_visual(loaded.model, tmp_path, paths[:1], layer="fc7", device="cpu",
                                       log=lambda s: None)
        np.testing.assert_allclose(ref.embed(x, "fc7").numpy(), fc7, rtol=1e-5, atol=1e-6)


def test_loader_refuses_what_is_not_vgg16(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        vgg.load_vgg16(tmp_path / "absent.pth")
    sd = vgg.VGG16(**TINY).state_dict()
    torch.save({k: v for k, v in sd.items() if k != "classifier.6.bias"}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing keys.*classifier.6.bias"):
        vgg.load_vgg16(tmp_path / "partial.pth")
    bad = dict(sd)
    bad["classifier.0.weight"] = torch.zeros(32, 17)
    torch.save(bad, tmp_path / "badshape.pth")
    with pytest.raises(ValueError, match="classifier.0.weight has 17 inputs"):
        vgg.load_vgg16(tmp_path / "badshape.pth")
    bad = dict(sd)
    bad["features.2.weight"] = torch.zeros(4, 5, 3, 3)  # conv input does not chain
    torch.save(bad, tmp_path / "chain.pth")
    with pytest.raises(ValueError, match="do not form a VGG16"):
        vgg.load_vgg16(tmp_path / "chain.pth")
    torch.save(vgg.VGG16(**TINY), tmp_path / "module.pth")  # a pickled module, not a state dict
    with pytest.raises(ValueError, match="weights_only"):
        vgg.load_vgg16(tmp_path / "module.pth")
    torch.save(sd, tmp_path / "vgg16-deadbeef.pth")  # torch.hub name whose hash prefix is wrong
    with pytest.raises(ValueError, match="does not match the hash prefix"):
        vgg.load_vgg16(tmp_path / "vgg16-deadbeef.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    assert vgg.load_vgg16(tmp_path / "wrapped.pth").model.fc_dim == 32


# --- images -------------------------------------------------------------------------------------

def test_preprocessing_resizes_centre_crops_and_normalises(tmp_path):
    img = np.zeros((256, 512, 3), dtype=np.uint8)  # h=256, w=512: no resize, crop columns 144..367
    img[:, :256] = (255, 0, 0)
    img[:, 256:] = (0, 0, 255)
    Image.fromarray(img).save(tmp_path / "x.png")
    px = images.load_image(tmp_path / "x.png")
    assert px.shape == (224, 224, 3) and px.dtype == np.uint8
    assert px[:, 111].tolist() == [[255, 0, 0]] * 224 and px[:, 112].tolist() == [[0, 0, 255]] * 224
    big = Image.fromarray(np.full((600, 1000, 3), 128, dtype=np.uint8))  # shorter side -> 256, crop 224
    big.save(tmp_path / "big.jpg")
    assert images.load_image(tmp_path / "big.jpg").shape == (224, 224, 3)
    x = vgg.preprocess_batch(np.full((2, 224, 224, 3), 128, dtype=np.uint8), torch.device("cpu"))
    assert x.shape == (2, 3, 224, 224) and x.is_contiguous(memory_format=torch.channels_last)
    want = (128 / 255 - np.array(vgg.IMAGENET_MEAN)) / np.array(vgg.IMAGENET_STD)
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("bad", ["../outside.png", "img/../../outside.png", "/etc/passwd", "link/x.png"])
def test_image_path_escaping_the_dataset_is_refused(tmp_path, bad):
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    (tmp_path / "outside.png").write_bytes(b"")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "link")  # a symlink out of the dataset directory
    pd.DataFrame({"item_id": ["a", "b", "c"], "image_path": ["", "img/ok.png", bad]}).to_csv(
        root / "items.csv", index=False)
    with pytest.raises(DatasetError) as info:
        vgg.extract_visual(vgg.VGG16(**TINY), root, ["", "img/ok.png", bad], device="cpu", log=lambda s: None)
    err = info.value
    assert (err.file, err.column, err.row) == ("items.csv", "image_path", 4)  # CSV line of the third item
    assert "absolute" in err.message or "escapes" in err.message


# --- feature store -------------------------------------------------------------------------------

def test_build_features_with_and_without_weights(tmp_path):
    tiny_weights(tmp_path / "w.pth")
    paths = make_images(tmp_path)
    n = len(paths)
    ids = np.array([f"i{k}" for k in range(n)])
    titles, texts = [f"item {k}" for k in range(n)], ["red apple"] * n
    cfg = FeatureConfig(word2vec_dim=8, word2vec_epochs=2, vgg_weights=str(tmp_path / "w.pth"), device="cpu")
    table, manifest = build_features(ids, titles, texts, np.arange(n), cfg, image_paths=paths,
                                     image_root=tmp_path, log=lambda s: None)
    assert table.column_names == ["item_id", "annotation", "visual", "has_image", "log_degree"]
    assert feature_matrix(table).shape == (n, 8 + 32 + 1 + 1)
    assert feature_blocks(table)["visual"].shape == (n, 32)
    m = manifest["columns"]
    assert m["visual"]["dim"] == 32 and m["visual"]["layer"] == "fc6"
    assert m["visual"]["images"]["missing"] == 1 and m["visual"]["images"]["corrupt"] == 2
    assert len(m["visual"]["weights_sha256"]) == 64
    json.dumps(manifest)  # it is written as JSON
    # no weights: the visual block is left out (not faked) and the reason is logged
    logs = []
    table, manifest = build_features(ids, titles, texts, np.arange(n), FeatureConfig(word2vec_dim=8,
                                     word2vec_epochs=2), image_paths=paths, image_root=tmp_path, log=logs.append)
    assert table.column_names == ["item_id", "annotation", "log_degree"]
    assert "visual" in manifest["skipped"] and any("no VGG16 weights" in s for s in logs)
    # weights but no image paths: skipped too
    logs = []
    table, manifest = build_features(ids, titles, texts, np.arange(n), cfg, image_paths=[""] * n,
                                     image_root=tmp_path, log=logs.append)
    assert "visual" not in table.column_names and any("no image_path values" in s for s in logs)


def test_features_stage_embeds_images_of_every_item_including_new_ones(tmp_path):
    data = make_community_dataset(tmp_path / "data", n_items=20, n_contexts=20, per_context=4, extra_items=3)
    items = pd.read_csv(data / "items.csv")
    (data / "img").mkdir()
    for k in range(0, len(items), 2):  # every other item has an image, new items included
        Image.fromarray(np.full((64, 96, 3), 10 * k, dtype=np.uint8)).save(data / f"img/{k}.png")
    items["image_path"] = [f"img/{k}.png" if k % 2 == 0 else "" for k in range(len(items))]
    items.to_csv(data / "items.csv", index=False)
    tiny_weights(tmp_path / "w.pth")
    cfg = pipeline.PipelineConfig(data=str(data), out=str(tmp_path / "out"))
    cfg.features = FeatureConfig(word2vec_dim=8, word2vec_epochs=2, vgg_weights=str(tmp_path / "w.pth"))
    cfg.train.device = "cpu"
    pipeline.prepare(cfg, log=lambda s: None)
    pipeline.features(cfg, log=lambda s: None)
    table = pq.read_table(tmp_path / "out/features/features.parquet")
    assert table.num_rows == 23
    has = table.column("has_image").to_numpy()
    assert has.tolist() == [1 - k % 2 for k in range(23)]
    assert column_matrix(table.column("visual"))[20:][has[20:] == 1].any(axis=1).all()  # new items too
    manifest = json.loads((tmp_path / "out/features/features_manifest.json").read_text())
    assert list(manifest["columns"]) == ["annotation", "visual", "has_image", "log_degree"]


def test_cli_maps_weight_and_vector_paths():
    import argparse

    from pinsage.cli import config_from_args
    from pinsage.run.params import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--vgg-weights", "w/vgg16.pth", "--word2vec-vectors", "v.txt"]), "o")
    assert cfg.features.vgg_weights == "w/vgg16.pth" and cfg.features.word2vec_vectors == "v.txt"
    assert config_from_args(p.parse_args([]), "o").features.vgg_weights is None


# --- annotations ---------------------------------------------------------------------------------

def test_word2vec_cooccurring_words_are_closer_than_words_that_never_cooccur():
    rng = np.random.default_rng(0)
    groups = [["cat", "dog", "pet", "fur", "paw"], ["car", "road", "wheel", "engine", "tyre"]]
    filler = [f"w{k}" for k in range(300)]  # a realistic vocabulary, so the topic words are not subsampled away
    corpus = [list(rng.choice(groups[k % 2], size=3, replace=False)) + list(rng.choice(filler, size=3))
              for k in range(1000)]  # each sentence: words of one topic only, plus noise
    cfg = FeatureConfig(word2vec_dim=16, word2vec_epochs=30, seed=0)
    wv = train_word2vec(corpus, cfg)

    def cos(a, b):
        return float(np.dot(wv[a], wv[b]) / np.linalg.norm(wv[a]) / np.linalg.norm(wv[b]))

    for a, b, c in [("cat", "dog", "car"), ("road", "wheel", "paw"), ("fur", "paw", "engine")]:
        assert cos(a, b) > cos(a, c) + 0.2, (a, b, c)
    for topic, other in (groups, groups[::-1]):
        for a in topic:  # every word is closer to each word of its topic than to any of the other topic
            assert min(cos(a, b) for b in topic if b != a) > max(cos(a, c) for c in other), a
    again = train_word2vec(corpus, cfg)
    assert np.array_equal(again.vectors, wv.vectors)  # seeded: identical


def test_annotation_is_mean_of_known_word_vectors_and_pretrained_vectors_load(tmp_path):
    (tmp_path / "vec.txt").write_text("3 2\nred 1 0\napple 0 1\nsky 2 2\n")
    titles, texts = ["Red Apple", "unknown words only", ""], ["zzz", "", "sky"]
    cfg = FeatureConfig(word2vec_vectors=str(tmp_path / "vec.txt"))
    table, manifest = build_features(np.array(["a", "b", "c"]), titles, texts, np.zeros(3), cfg, log=lambda s: None)
    np.testing.assert_allclose(column_matrix(table.column("annotation")), [[0.5, 0.5], [0, 0], [2, 2]])
    assert manifest["columns"]["annotation"]["dim"] == 2
    assert manifest["columns"]["annotation"]["items_without_known_words"] == 1
    assert item_annotations(["Toy Story (1995)"], ["adventure|children pixar"]) == \
        [["toy", "story", "1995", "adventure", "children", "pixar"]]
