"""MD speed of pbcgnn potentials: steps/s and ns/day against system size, ASE and OpenMM engines.

Usage (from the repository root):

    python benchmarks/md/md_speed.py --out runs/bench_md                        # 192, 1536, 12288 atoms
    python benchmarks/md/md_speed.py --checkpoint runs/water/best.pt --device cuda --out runs/bench_md_gpu

Systems are a real 64-H2O frame (192 atoms, deepmd_water) repeated 1x1x1, 2x2x2 and 4x4x4. Each
run is NVE at 0.5 fs from 300 K Maxwell-Boltzmann velocities with the default 1 A Verlet skin,
so neighbour-list rebuilds are included at their natural rate. Use ``--checkpoint`` with a
trained model (the numbers in README.md used the default-size model of the README's MD example).
Without it the model is an untrained SchNet of the default size (``ModelConfig()``: 64 features,
3 interactions, 6 A cutoff, float32): the cost of a step does not depend on the weights, but
the untrained readout is zero, so atoms fly ballistically and after a few tens of fs two of them
meet and the run stops (keep ``--steps`` small). Also measured per size: one neighbour-list build
and one model evaluation (energy and forces) on their own. Writes ``OUT/result.json``; timings
live here, never in tests.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import ase.io
import torch

from pbcgnn.calculator import PbcgnnCalculator
from pbcgnn.checkpoint import build_model
from pbcgnn.config import Config, ModelConfig
from pbcgnn.md import MDConfig, run_md
from pbcgnn.model.tabulate import tabulate
from pbcgnn.neighbors import neighbor_list

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared/data/deepmd_water/deepmd_water.xyz"
REPEATS = {192: (1, 1, 1), 1536: (2, 2, 2), 12288: (4, 4, 4), 98304: (8, 8, 8)}


def make_model(checkpoint: str | None, device: str, dtype: str | None, model_json: dict, exact: bool = False):
    """(model, description): a checkpoint's model, or an untrained default-size SchNet; tabulated
    (as ``pbcgnn md`` runs it by default) unless ``exact``."""
    if checkpoint:
        calc = PbcgnnCalculator.from_checkpoint(checkpoint, device=device, dtype=dtype, tabulate=not exact)
        return calc.model, f"checkpoint {checkpoint}" + (" (exact)" if exact else " (tabulated)")
    torch.manual_seed(0)
    config = Config(model=ModelConfig(**{**({"dtype": dtype} if dtype else {}), **model_json}))
    model = build_model(config).to(device).eval()
    return (model if exact else tabulate(model)), f"untrained {config.model}" + (" (exact)" if exact else " (tabulated)")


def time_parts(model, atoms, device: str, repeats: int = 3) -> dict:
    """Seconds for one neighbour-list build (cutoff + 1 A skin) and one model evaluation."""
    t = time.perf_counter()
    for _ in range(repeats):
        edges, _ = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff + 1.0)
    build = (time.perf_counter() - t) / repeats
    calc = PbcgnnCalculator(model, device=device, skin=1.0)
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_forces()  # builds the list, warms up
    t = time.perf_counter()
    for k in range(repeats):
        atoms.positions[0, 0] += 1e-4  # a new state, same list
        atoms.get_forces()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {"neighbor_list_s": build, "evaluation_s": (time.perf_counter() - t) / repeats,
            "edges": int(edges.shape[1])}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="extxyz with a 192-atom water frame")
    p.add_argument("--frame", type=int, default=0)
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 1536, 12288], choices=sorted(REPEATS))
    p.add_argument("--engines", nargs="+", default=["ase", "openmm"], choices=["ase", "openmm"])
    p.add_argument("--steps", type=int, nargs="+", default=[50, 20, 5],
                   help="MD steps per size (one value for all, or one per size)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--model", type=json.loads, default={}, help="ModelConfig overrides as JSON (untrained model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--exact", action="store_true", help="the filter networks at every edge, not tabulated")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"])
    p.add_argument("--out", type=Path, default=Path("runs/bench_md"))
    args = p.parse_args(argv)

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    steps = args.steps if len(args.steps) == len(args.sizes) else [args.steps[0]] * len(args.sizes)
    model, description = make_model(args.checkpoint, device, args.dtype, args.model, args.exact)
    frame = ase.io.read(args.data, index=args.frame)
    if len(frame) != 192:
        raise SystemExit(f"{args.data} frame {args.frame}: expected 192 atoms, found {len(frame)}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "model": description,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda")
        else f"cpu ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "torch": torch.__version__,
        "runs": [],
    }
    for size, n_steps in zip(args.sizes, steps):
        atoms = frame.repeat(REPEATS[size])
        parts = time_parts(model, atoms, device)
        for engine in args.engines:
            if engine == "openmm":
                try:
                    import openmm  # noqa: F401
                except ImportError:
                    logging.warning("OpenMM not installed: skipping the openmm engine")
                    continue
            calc = PbcgnnCalculator(model, device=device, skin=1.0)
            config = MDConfig(engine=engine, ensemble="nve", temperature_K=300.0, timestep_fs=0.5, steps=n_steps,
                              interval=n_steps)
            result = run_md(calc, atoms, config, args.out / f"{engine}_{size}", progress=False)
            entry = {"atoms": size, "engine": engine, "steps": n_steps, "wall_s": result.wall_s,
                     "steps_per_s": result.steps_per_s, "ns_per_day": result.ns_per_day,
                     "neighbor_list_builds": result.rebuilds, **parts}
            report["runs"].append(entry)
            logging.info("%s", entry)
    (args.out / "result.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(main(), indent=2))
