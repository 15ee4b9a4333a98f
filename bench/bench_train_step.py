"""Where a training step's time goes: tracing the sampled computation graph against the model's work,
and the sampled graph against the full-catalogue pass, at several batch sizes.

    python bench/bench_train_step.py --data data/ml-latest-small
    python bench/bench_train_step.py --data ../shared/data/lastfm-2k --batch 512 2048 --threads 1

Prepares the dataset with the default stages (prepare, graph, features, neighbours) in a temporary
directory, then for each batch size and graph kind builds ``--steps`` minibatches of the epoch with
``--hard`` hard negatives per query (the curriculum's fourth epoch by default) and runs forward, loss,
backward and an Adam step on each. Prints per step: the input nodes, the seconds to trace the graph
and the seconds of the model, and the seconds per 100,000 training pairs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pinsage import pipeline  # noqa: E402
from pinsage.graph.neighbors import VisitTable  # noqa: E402
from pinsage.model.losses import sampled_softmax_loss  # noqa: E402
from pinsage.model.network import build_model  # noqa: E402
from pinsage.model.sampler import MinibatchProducer, SamplerConfig, negative_candidates, positive_pairs, reachable_items  # noqa: E402
from pinsage.run.config import PipelineConfig  # noqa: E402
from pinsage.run.layout import RunDir  # noqa: E402
from pinsage.util.io import read_npz  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO / "data" / "ml-latest-small"))
    p.add_argument("--batch", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--hard", type=int, default=3, help="hard negatives per query (epoch hard + 1)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        cfg = PipelineConfig(data=a.data, out=tmp, cpus=a.threads)
        for stage in ("prepare", "graph", "features", "neighbors"):
            pipeline.STAGES[stage](cfg, log=lambda s: None)
        run = RunDir(tmp)
        feats, nbrs = pipeline._load_inputs(run)
        v = read_npz(run.visits)
        rows = run.interactions(["context", "item"])
        rng = np.random.default_rng(0)
        pairs = positive_pairs(rows["context"].to_numpy(), rows["item"].to_numpy(), 3,
                               run.summary()["has_timestamps"], rng)
        pairs = pairs[rng.permutation(len(pairs))]  # an epoch's order, as training draws it
        cand = negative_candidates(np.bincount(rows["item"].to_numpy(), minlength=len(feats)), cfg.train.sampler)
        reachable = reachable_items(nbrs, cand)
        torch.manual_seed(0)
        model = build_model(cfg.model, feats)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        print(f"{Path(a.data).name}: {len(feats):,} items, {len(pairs):,} pairs an epoch; {a.threads} thread(s), "
              f"{a.hard} hard negatives per query\n")
        print("| batch | graph | input nodes | trace (s) | model (s) | trace share | s per 100k pairs |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for batch in a.batch:
            for full in (False, True):
                sc = SamplerConfig(batch_size=batch, max_hard_negatives=a.hard)
                prod = MinibatchProducer(pairs, feats, nbrs, VisitTable(v["items"], v["counts"]), sc, a.hard, 0,
                                         cand, cfg.model.n_layers, full=reachable if full else None)
                t = time.perf_counter()
                batches = [prod.make_batch(b) for b in range(a.steps)]
                trace = (time.perf_counter() - t) / a.steps
                t = time.perf_counter()
                for b in batches:
                    z = model(b.x, b.item_index, b.blocks)  # (N_targets, D)
                    loss = sampled_softmax_loss(
                        z[b.query], z[b.positive], z[b.negative], cfg.train.temperature, z_hard=z[b.hard],
                        negative_mask=b.negative_item[None, :] != b.positive_item[:, None],
                        hard_mask=b.hard_item != b.positive_item[:, None])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                step = (time.perf_counter() - t) / a.steps
                print(f"| {batch} | {'full' if full else 'sampled'} | {len(batches[0].item_index):,} of "
                      f"{len(reachable):,} | {trace:.3f} | {step:.3f} | {trace / (trace + step):.0%} | "
                      f"{100_000 / batch * (trace + step):.1f} |", flush=True)


if __name__ == "__main__":
    main()
