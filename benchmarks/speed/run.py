"""Side-by-side speed benchmark: pbcgnn (exact and --tabulate) vs SchNetPack's SchNet vs a dense SchNet.

Usage (from the repository root; SchNetPack is installed only in the benchmark's environment):

    ~/spk-venv/bin/python benchmarks/speed/run.py --out runs/bench_speed
    python benchmarks/speed/run.py --sizes 192 --repeats 1 --train-steps 1 --out /tmp/speed   # no SchNetPack

Every implementation runs in this one process, interleaved and repeated, so the ratios hold
on a noisy, shared machine. Liquid water: one real 192-atom frame (deepmd_water frame 0)
replicated k x k x k. Per size: neighbour-list time, energy+forces time per call and peak
memory; then training frames/s at batch 8 on 192-atom frames; the model's FLOPs per call and
the achieved FLOP/s against this machine's measured float32 matmul peak. Cases predicted to
exceed ``--memory-budget-gib`` (from the bytes per edge measured at the previous size) are
recorded as skipped, never run. Writes OUT/result.json and OUT/table.md.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import ase.io
import numpy as np
import torch
from torch_geometric.data import Batch, Data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import DenseCase, SchNetPackCase, dense_bytes, import_schnetpack, matmul_flops, replicate  # noqa: E402

from pbcgnn.graph import atoms_to_graph  # noqa: E402
from pbcgnn.model import SchNet, compute_properties  # noqa: E402
from pbcgnn.model.aggregate import Aggregation, AutogradSum, NetworkFilter  # noqa: E402
from pbcgnn.model.tabulate import tabulate  # noqa: E402
from pbcgnn.neighbors import neighbor_list, radius_graph_pbc  # noqa: E402
from pbcgnn.train.loss import energy_force_loss  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared/data/deepmd_water/deepmd_water.xyz"
#: The benchmark's model: SchNetPack's SchNet defaults for water (128 features, 6 interactions, 50 Gaussians, 6 A).
SIZE = {"hidden_channels": 128, "num_filters": 128, "num_interactions": 6, "num_rbf": 50, "cutoff": 6.0}


# --------------------------------------------------------------------------- measuring


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so RSS counts live memory only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(fn, device: torch.device) -> tuple[float, float]:  # noqa: ANN001
    """(seconds, peak extra memory in bytes) of one call: host RSS high-water mark, or CUDA allocator peak."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    elif Path("/proc/self/clear_refs").exists():
        _release_free_memory()
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = _status_kib("VmRSS") * 1024
    else:  # no /proc (not Linux): no memory figure
        base = None
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    if base is None:
        return seconds, float("nan")
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status_kib("VmHWM") * 1024
    return seconds, float(peak - base)


def matmul_peak(device: torch.device, n: int = 4096, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of an n x n matmul."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    best = min(measure(lambda: a @ b, device)[0] for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = names[0] if names else cpu
    memory = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()) if Path("/proc/meminfo").exists() else None
    spk = import_schnetpack()
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "memory_gib": round(int(memory.group(1)) / 2**20, 1) if memory else None,
            "torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "schnetpack": getattr(spk, "__version__", None) if spk else None}


# --------------------------------------------------------------------------- cases


def graph(atoms, cutoff: float, device: torch.device) -> Data:  # noqa: ANN001
    """pbcgnn's neighbour list (matscipy on CPU, torch-cluster on CUDA) as a graph."""
    pos = torch.as_tensor(atoms.positions, device=device)
    cell = torch.as_tensor(atoms.cell.array, device=device)
    if device.type == "cuda":
        edge_index, offsets = radius_graph_pbc(pos, cell, torch.as_tensor(atoms.pbc, device=device), cutoff)
    else:
        e, s = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
        edge_index, offsets = torch.from_numpy(e), torch.from_numpy(s)
    return Data(z=torch.as_tensor(atoms.numbers, device=device), pos=pos, cell=cell.unsqueeze(0),
                edge_index=edge_index, cell_offsets=offsets)


def vesin_list(atoms, cutoff: float):  # noqa: ANN001, ANN201
    """vesin's list (informational: the backend pbcgnn does not use), or None if not installed."""
    try:
        from vesin import NeighborList
    except ImportError:
        return None
    return lambda: NeighborList(cutoff=cutoff, full_list=True).compute(atoms.positions, atoms.cell.array, True, "ijS")


def build_cases(args, model: SchNet, device: torch.device) -> dict:  # noqa: ANN001
    cases = {"pbcgnn": model}
    if not args.no_tabulate:
        t0 = time.perf_counter()
        cases["pbcgnn --tabulate"] = tabulate(model, n_points=args.tabulate_points, compile=not args.no_compile)
        args.tabulate_build_s = time.perf_counter() - t0
    if not args.no_schnetpack and import_schnetpack() is not None:
        cases["schnetpack"] = {nl: SchNetPackCase(model.hparams, nl, str(device)) for nl in SchNetPackCase.NEIGHBOR_LISTS}
    if not args.no_dense:
        cases["dense"] = DenseCase(model)
    return cases


def inference(args, model: SchNet, cases: dict, frame, device: torch.device, peak_gflops: float) -> list[dict]:  # noqa: ANN001
    size = model.hparams
    cutoff, budget = size["cutoff"], args.memory_budget_gib * 2**30
    rows, bytes_per_edge = [], {}
    for n in args.sizes:
        atoms = replicate(frame, n)
        row = {"atoms": n, "neighbor_list_s": {}, "energy_forces_s": {}, "peak_mib": {}, "skipped": {}}
        repeats = args.repeats if n <= 1536 else args.repeats_large
        # Neighbour lists, interleaved.
        lists = {"pbcgnn (matscipy)" if device.type == "cpu" else "pbcgnn (torch-cluster)": lambda: graph(atoms, cutoff, device)}
        if (ves := vesin_list(atoms, cutoff)) is not None and device.type == "cpu":
            lists["vesin (not used)"] = ves
        for nl, case in cases.get("schnetpack", {}).items():
            if nl == "Torch" and n > 1536:  # all pairs x all shifts: O(N^2) memory
                row["skipped"][f"schnetpack NL {nl}"] = "O(N^2) memory"
                continue
            try:  # SchNetPack 2.1.1's TorchNeighborList fails on torch 2.13 (arange of a tensor)
                case.inputs(atoms)
            except Exception as err:  # noqa: BLE001
                row["skipped"][f"schnetpack NL {nl}"] = f"{type(err).__name__}: {str(err).splitlines()[0][:80]}"
                continue
            lists[f"schnetpack {nl}"] = lambda case=case: case.inputs(atoms)
        times = {k: [] for k in lists}
        for _ in range(max(1, repeats)):
            for k, fn in lists.items():
                times[k].append(measure(fn, device)[0])
        row["neighbor_list_s"] = {k: min(v) for k, v in times.items()}
        data = graph(atoms, cutoff, device)
        row["edges"] = int(data.edge_index.shape[1])
        spk_nl = min((k for k in row["neighbor_list_s"] if k.startswith("schnetpack")),
                     key=row["neighbor_list_s"].get, default=None)
        # Energy + forces, interleaved.
        calls = {}
        for name, case in cases.items():
            predicted = dense_bytes(n, size) if name == "dense" else bytes_per_edge.get(name, 0.0) * row["edges"]
            if name == "dense" and not DenseCase.valid(atoms, cutoff):
                row["skipped"][name] = "minimum image invalid"
            elif predicted > budget:
                row["skipped"][name] = f"predicted {predicted / 2**30:.0f} GiB > budget {args.memory_budget_gib} GiB"
            elif name == "schnetpack":
                spk = case[spk_nl.split()[1]]
                inputs = spk.inputs(atoms)
                calls[name] = lambda spk=spk, inputs=inputs: spk.energy_forces(inputs)
            elif name == "dense":
                z = data.z.unsqueeze(0)
                calls[name] = lambda z=z: case.energy_forces(z, data.pos.unsqueeze(0), data.cell)
            else:
                calls[name] = lambda m=case: compute_properties(m, data)
        samples = {k: [] for k in calls}
        for rep in range(repeats + (1 if n <= args.warmup_max else 0)):
            for name, fn in calls.items():
                seconds, peak = measure(fn, device)
                if rep or n > args.warmup_max:
                    samples[name].append((seconds, peak))
        for name, values in samples.items():
            row["energy_forces_s"][name] = min(s for s, _ in values)
            row["peak_mib"][name] = max(p for _, p in values) / 2**20
            bytes_per_edge[name] = max(p for _, p in values) / row["edges"]
        row["bytes_per_edge"] = {k: row["peak_mib"][k] * 2**20 / row["edges"] for k in row["peak_mib"]}
        if n <= args.warmup_max:  # one more call each: skip for the largest size
            row["energy_vs_pbcgnn"] = agreement(calls, row["energy_forces_s"])
        row["schnetpack_neighbor_list"] = spk_nl
        flops = matmul_flops(n, row["edges"], size)
        row["model_gflop"] = flops["energy_forces"] / 1e9
        row["achieved_gflops"] = {k: flops["energy_forces"] / s / 1e9 for k, s in row["energy_forces_s"].items()}
        row["fraction_of_matmul_peak"] = {k: v / peak_gflops for k, v in row["achieved_gflops"].items()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def agreement(calls: dict, timed: dict) -> dict:
    """|E - E_pbcgnn| / |E_pbcgnn| for the implementations sharing pbcgnn's weights (sanity check)."""
    if "pbcgnn" not in timed:
        return {}
    energy = {}
    for name in ("pbcgnn", "pbcgnn --tabulate", "dense"):
        if name in timed:
            out = calls[name]()
            energy[name] = float((out["energy"] if isinstance(out, dict) else out[0]).sum())
    return {k: abs(v - energy["pbcgnn"]) / max(abs(energy["pbcgnn"]), 1e-30) for k, v in energy.items() if k != "pbcgnn"}


class PlainAutogradSchNet(SchNet):
    """SchNet trained by plain autograd on the filter network per edge (pbcgnn's training path before
    the grid kernels, and still its reference in the tests)."""

    def aggregation(self) -> Aggregation:
        return AutogradSum(NetworkFilter(self.radial)) if self.training else super().aggregation()


def training(args, frames, device: torch.device) -> dict:  # noqa: ANN001
    """Training frames/s at batch ``--train-batch``: forward, forces with create_graph, loss, backward, AdamW."""
    hp = {**SIZE, **args.model}
    batch_frames = frames[: args.train_batch]
    batch = Batch.from_data_list([atoms_to_graph(a, hp["cutoff"]) for a in batch_frames]).to(device)

    def pbcgnn_step(model_class: type[SchNet]) -> Callable[[], None]:
        torch.manual_seed(0)
        model = model_class(**hp).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            pred = compute_properties(model, batch, forces=True, training=True)
            loss, _ = energy_force_loss(pred, batch, 1.0, 100.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    steps = {"pbcgnn": pbcgnn_step(SchNet), "pbcgnn plain autograd": pbcgnn_step(PlainAutogradSchNet)}
    if not args.no_schnetpack and import_schnetpack() is not None:
        spk = SchNetPackCase(hp, "MatScipy", str(device))
        inputs = spk.inputs(batch_frames)
        energy = torch.tensor([a.get_potential_energy() for a in batch_frames], dtype=torch.float32, device=device)
        forces = torch.as_tensor(np.concatenate([a.get_forces() for a in batch_frames]), dtype=torch.float32,
                                 device=device)
        spk_opt = torch.optim.AdamW(spk.model.parameters(), lr=1e-4)
        steps["schnetpack"] = lambda: spk.train_step(inputs, energy, forces, spk_opt)
    times = {k: [] for k in steps}
    for rep in range(args.train_steps + 1):  # the first step of each is a warm-up
        for name, step in steps.items():
            seconds = measure(step, device)[0]
            if rep:
                times[name].append(seconds)
    return {"batch": len(batch_frames), "atoms_per_frame": len(batch_frames[0]), "steps": args.train_steps,
            "step_s": {k: statistics.median(v) for k, v in times.items()},
            "frames_per_s": {k: len(batch_frames) / statistics.median(v) for k, v in times.items()}}


# --------------------------------------------------------------------------- report


def table(report: dict) -> str:
    rows, lines = report["inference"], []
    impls = list(dict.fromkeys(k for r in rows for k in (*r["energy_forces_s"], *r["skipped"]) if "NL" not in k))
    lines += ["| atoms | edges | " + " | ".join(f"NL {k} (ms)" for k in rows[0]["neighbor_list_s"]) + " |",
              "|---" * (2 + len(rows[0]["neighbor_list_s"])) + "|"]
    for r in rows:
        nl = [f"{1e3 * r['neighbor_list_s'][k]:.1f}" if k in r["neighbor_list_s"] else "skipped"
              for k in rows[0]["neighbor_list_s"]]
        lines.append(f"| {r['atoms']} | {r['edges']} | " + " | ".join(nl) + " |")
    lines += ["", "| atoms | " + " | ".join(f"E+F {k} (s)" for k in impls)
              + " | SchNetPack / pbcgnn | SchNetPack / --tabulate | us/atom pbcgnn | us/atom --tabulate |",
              "|---" * (5 + len(impls)) + "|"]
    for r in rows:
        t = r["energy_forces_s"]
        cells = [f"{t[k]:.4g}" if k in t else "skipped" for k in impls]
        ratio = lambda a, b: f"{t[a] / t[b]:.2f}x" if a in t and b in t else "-"  # noqa: E731
        per_atom = lambda k: f"{1e6 * t[k] / r['atoms']:.1f}" if k in t else "-"  # noqa: E731
        lines.append(f"| {r['atoms']} | " + " | ".join(cells) + f" | {ratio('schnetpack', 'pbcgnn')} | "
                     f"{ratio('schnetpack', 'pbcgnn --tabulate')} | {per_atom('pbcgnn')} | {per_atom('pbcgnn --tabulate')} |")
    lines += ["", "| atoms | " + " | ".join(f"peak {k} (MiB)" for k in impls) + " | "
              + " | ".join(f"B/edge {k}" for k in impls) + " |", "|---" * (1 + 2 * len(impls)) + "|"]
    for r in rows:
        lines.append(f"| {r['atoms']} | " + " | ".join(f"{r['peak_mib'][k]:.0f}" if k in r["peak_mib"] else "skipped"
                                                        for k in impls) + " | "
                     + " | ".join(f"{r['bytes_per_edge'][k]:.0f}" if k in r["bytes_per_edge"] else "-" for k in impls) + " |")
    lines += ["", f"matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s (float32, {report['machine']['torch_threads']} threads)",
              "", "| atoms | model GFLOP per E+F call | " + " | ".join(f"{k} GFLOP/s (% peak)" for k in impls) + " |",
              "|---" * (2 + len(impls)) + "|"]
    for r in rows:
        lines.append(f"| {r['atoms']} | {r['model_gflop']:.2f} | " + " | ".join(
            f"{r['achieved_gflops'][k]:.1f} ({100 * r['fraction_of_matmul_peak'][k]:.0f} %)"
            if k in r["achieved_gflops"] else "-" for k in impls) + " |")
    if report.get("training"):
        tr = report["training"]
        lines += ["", f"Training, batch {tr['batch']} x {tr['atoms_per_frame']} atoms: " + ", ".join(
            f"{k} {v:.2f} frames/s" for k, v in tr["frames_per_s"].items())]
        spk = tr["frames_per_s"].get("schnetpack")
        if spk:
            lines.append("Training speed / SchNetPack's: " + ", ".join(
                f"{k} {v / spk:.1f}x" for k, v in tr["frames_per_s"].items() if k != "schnetpack"))
    skipped = {f"{r['atoms']} {k}": v for r in rows for k, v in r["skipped"].items()}
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="extended XYZ; frames of equal size")
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 1536, 12288, 98304])
    p.add_argument("--repeats", type=int, default=5, help="timed calls per case up to 1536 atoms")
    p.add_argument("--repeats-large", type=int, default=2, help="timed calls per case above 1536 atoms")
    p.add_argument("--warmup-max", type=int, default=12288, help="one untimed warm-up call up to this size")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=5, help="timed steps (0: no training benchmark)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tabulate-points", type=int, default=2401)
    p.add_argument("--memory-budget-gib", type=float, default=14.0)
    p.add_argument("--peak-matmul", type=int, default=4096, help="n of the n x n matmul that measures the peak")
    p.add_argument("--model", type=json.loads, default={}, help="SchNet size overrides as JSON (smoke runs)")
    p.add_argument("--no-schnetpack", action="store_true")
    p.add_argument("--no-dense", action="store_true")
    p.add_argument("--no-tabulate", action="store_true")
    p.add_argument("--no-compile", action="store_true", help="tabulated kernels without torch.compile")
    p.add_argument("--out", type=Path, default=Path("runs/bench_speed"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = {**SIZE, **args.model}
    device = torch.device(args.device)
    frames = ase.io.read(args.data, index=f":{max(args.train_batch, 1)}")
    torch.manual_seed(0)
    model = SchNet(**size).to(device).eval()
    with torch.no_grad():  # a non-trivial function: random readout instead of the zero init
        model.lin2.weight.normal_(0.0, 0.1)
    peak = matmul_peak(device, args.peak_matmul)
    report = {"command": " ".join(sys.argv), "machine": machine(device), "model": size,
              "frame": f"{args.data.name} frame 0, {len(frames[0])} atoms", "matmul_peak_gflops": peak}
    cases = build_cases(args, model, device)
    report["tabulate"] = {"n_points": args.tabulate_points, "build_s": getattr(args, "tabulate_build_s", None)}
    report["inference"] = inference(args, model, cases, frames[0], device, peak)
    report["training"] = training(args, frames, device) if args.train_steps > 0 else None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(report, indent=2))
    (args.out / "table.md").write_text(table(report))
    print(table(report))
    return report


if __name__ == "__main__":
    main()
