"""Training speed with graphs built on the fly against graphs kept in memory, interleaved.

The same model, optimiser and frames train alternately from two loaders in one process: the
in-memory ``FrameDataset`` (graphs built once, no workers) and the ``StreamedFrameDataset`` of an
on-disk store whose neighbour lists one DataLoader worker builds while the model trains (the
model on one thread), both through ``pbcgnn train``'s loader (:class:`pbcgnn.dataset.FrameLoader`).
Each block runs ``--steps`` optimiser steps of pbcgnn's own training step
(:func:`pbcgnn.train.epoch.train_epoch`) and times all but its first ``--warmup`` (which eat the
batches a worker prefetched while the other loader ran). Blocks alternate, so drifts of a shared
machine hit both. Frames/s per block, median per path, and their ratio go to ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/data/stream_speed.py --rounds 4 --steps 40 \\
        --out benchmarks/data/results/stream_speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pbcgnn.config import Config, DataConfig
from pbcgnn.dataset import FrameDataset, FrameLoader, file_sha256
from pbcgnn.dataset.loading import _read_options
from pbcgnn.dataset.streamed import StreamedFrameDataset, open_store
from pbcgnn.train import distributed
from pbcgnn.train.epoch import train_epoch
from pbcgnn.train.setup import set_up

CHENG = Path(__file__).resolve().parents[3] / "shared/data/cheng2019_h2o_revpbe0_d3/cheng2019_h2o_revpbe0_d3.xyz"


class Block:
    """``steps`` batches drawn from a long-lived iterator: one block of training for train_epoch."""

    def __init__(self, batches, steps: int) -> None:
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield next(self.batches)


def loader(dataset, batch_size: int, workers: int, seed: int):
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**7,
                                             generator=torch.Generator().manual_seed(seed))
    return iter(FrameLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                           persistent_workers=workers > 0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=CHENG)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    config = Config(data=DataConfig(paths=(str(args.data),))).validate()
    cutoff = config.model.cutoff
    memory = FrameDataset(args.data, cutoff)
    with tempfile.TemporaryDirectory() as root:
        store = open_store([args.data.resolve()], [file_sha256(args.data)], Path(root), _read_options(config.data))
        streamed = StreamedFrameDataset(store, cutoff)
        torch.manual_seed(0)
        training, _ = set_up(config, memory, torch.device("cpu"))
        ctx = distributed.setup(torch.device("cpu"))
        paths = {"memory": loader(memory, args.batch_size, 0, 1),
                 "disk": loader(streamed, args.batch_size, args.workers, 1)}
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for r in range(args.rounds):
            for name in (("memory", "disk") if r % 2 == 0 else ("disk", "memory")):
                kwargs = dict(tc=config.train, ctx=ctx, device=torch.device("cpu"), epoch=0, out=Path(root))
                train_epoch(training.model, training, Block(paths[name], args.warmup), **kwargs)
                t0 = time.perf_counter()
                train_epoch(training.model, training, Block(paths[name], args.steps), **kwargs)
                rates[name].append(args.steps * args.batch_size / (time.perf_counter() - t0))
                print(f"round {r}: {name} {rates[name][-1]:.2f} frames/s", flush=True)
    medians = {name: statistics.median(v) for name, v in rates.items()}
    result = {"data": str(args.data), "frames": len(memory), "model": config.model.__dict__,
              "batch_size": args.batch_size, "workers": args.workers, "threads": torch.get_num_threads(),
              "cpu_affinity": sorted(os.sched_getaffinity(0)), "frames_per_s": rates, "median_frames_per_s": medians,
              "disk_over_memory": medians["disk"] / medians["memory"]}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
