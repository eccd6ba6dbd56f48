"""PaiNN training speed and memory: pbcgnn (filter grids, and plain autograd) against SchNetPack 2.1.1.

Usage (from the repository root; SchNetPack lives only in the benchmark's environment, see README):

    OMP_NUM_THREADS=1 taskset -c 0 ~/spk-venv/bin/python benchmarks/speed/painn.py --cutoff 6.0 \\
        --out benchmarks/speed/results/painn_training.json

One step on a batch of 8 real 192-atom water frames: forward, forces with ``create_graph``,
``MSE(E/N) + 100 MSE(F)``, backward, AdamW, float32, one thread; neighbour lists and targets built
beforehand. The cases run **interleaved in one process** (each timed round runs every case once), so
a busy machine slows them alike; the medians and their ratios are reported. Peak memory is the
resident high-water mark (``VmHWM``) of a separate process per case that imports everything and runs
only that case (not ``ru_maxrss``, which Linux carries over from the parent across ``exec``).
Without SchNetPack (``import schnetpack`` fails) its column is dropped.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms
from torch_geometric.data import Batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import SchNetPackCase, import_schnetpack  # noqa: E402

from pbcgnn.graph import atoms_to_graph  # noqa: E402
from pbcgnn.model import PaiNN, compute_properties  # noqa: E402
from pbcgnn.train.loss import energy_force_loss  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared/data/deepmd_water/deepmd_water.xyz"
CASES = ("pbcgnn", "pbcgnn plain autograd", "schnetpack")


def schnetpack_painn_step(frames: list[Atoms], hidden: int, interactions: int, num_rbf: int,
                          cutoff: float) -> Callable[[], float]:
    """One training step of SchNetPack's PaiNN (Gaussian basis, cosine cutoff, unshared layers) on ``frames``."""
    torch.manual_seed(0)
    hparams = {"hidden_channels": hidden, "num_interactions": interactions, "num_rbf": num_rbf, "cutoff": cutoff}
    case = SchNetPackCase(hparams, "MatScipy", "cpu", representation="painn")
    inputs = case.inputs(frames)
    energy = torch.tensor([a.get_potential_energy() for a in frames], dtype=torch.float32)
    forces = torch.as_tensor(np.concatenate([a.get_forces() for a in frames]), dtype=torch.float32)
    optimizer = torch.optim.AdamW(case.model.parameters(), lr=1e-4)
    return lambda: case.train_step(inputs, energy, forces, optimizer)


def pbcgnn_painn_step(frames: list[Atoms], hidden: int, interactions: int, num_rbf: int, cutoff: float,
                      grid: bool) -> Callable[[], float]:
    """One training step of pbcgnn's PaiNN, through the filter grid or by plain autograd."""
    torch.manual_seed(0)
    batch = Batch.from_data_list([atoms_to_graph(a, cutoff) for a in frames])
    model = PaiNN(hidden, interactions, num_rbf, cutoff).train()
    model.grid_training = grid
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        pred = compute_properties(model, batch, forces=True, training=True)
        loss, _ = energy_force_loss(pred, batch, 1.0, 100.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def make_step(name: str, frames: list[Atoms], args: argparse.Namespace) -> Callable[[], float]:
    sizes = (frames, args.hidden, args.interactions, args.num_rbf, args.cutoff)
    if name == "schnetpack":
        return schnetpack_painn_step(*sizes)
    return pbcgnn_painn_step(*sizes, grid=name == "pbcgnn")


def interleaved(steps: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Seconds per step of each case; round 0 (compilation, caches) is a warm-up and not recorded."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds + 1):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            if r:
                times[name].append(time.perf_counter() - t0)
    return times


def vm_hwm_gib() -> float:
    """This process's peak resident memory (``VmHWM`` of /proc/self/status), GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def peak_rss_gib(name: str, args: argparse.Namespace) -> float:
    """Peak RSS of a fresh process that runs only ``name`` (a warm-up and two steps)."""
    cmd = [sys.executable, __file__, "--only", name, "--data", str(args.data), "--batch", str(args.batch),
           "--hidden", str(args.hidden), "--interactions", str(args.interactions), "--num-rbf", str(args.num_rbf),
           "--cutoff", str(args.cutoff)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)["maxrss_gib"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="extended XYZ with energies and forces")
    p.add_argument("--batch", type=int, default=8, help="the first BATCH frames form the batch")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--interactions", type=int, default=3)
    p.add_argument("--num-rbf", type=int, default=20)
    p.add_argument("--cutoff", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (medians reported)")
    p.add_argument("--no-schnetpack", action="store_true")
    p.add_argument("--only", choices=CASES, help=argparse.SUPPRESS)  # the memory subprocess
    p.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    frames = ase.io.read(args.data, index=f":{args.batch}")
    if args.only:
        interleaved({args.only: make_step(args.only, frames, args)}, 2)
        print(json.dumps({"maxrss_gib": vm_hwm_gib()}))
        return {}
    names = [c for c in CASES if c != "schnetpack" or (not args.no_schnetpack and import_schnetpack() is not None)]
    times = interleaved({name: make_step(name, frames, args) for name in names}, args.rounds)
    median = {name: statistics.median(t) for name, t in times.items()}
    report = {
        "model": f"PaiNN {args.hidden}x{args.interactions}, {args.num_rbf} radial functions, cutoff {args.cutoff} A",
        "batch": len(frames), "atoms_per_frame": len(frames[0]), "threads": 1, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "step_s": times, "median_step_s": median,
        "frames_per_s": {name: len(frames) / s for name, s in median.items()},
        "peak_rss_gib": {name: peak_rss_gib(name, args) for name in names},
    }
    if "schnetpack" in median:
        report["speedup_vs_schnetpack"] = {n: median["schnetpack"] / s for n, s in median.items() if n != "schnetpack"}
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
