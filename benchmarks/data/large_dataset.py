"""A dataset far larger than memory, end to end: 200,000 frames of 192-atom water, converted into
pbcgnn's on-disk frame store and trained on for one epoch, with peak memory measured.

The frames are random rotations of the shared Cheng revPBE0-D3 frames: cell, positions and forces
rotate together and energies are unchanged, so every label is real. Steps (each a subprocess,
measured by ``/usr/bin/time -v`` and by summing the RSS of its process tree every 0.2 s, since
DataLoader workers are separate processes):

1. ``make``: write the extended XYZ file, one frame at a time (~3.8 GB for 200,000 frames).
2. ``convert``: stream it into the store (``pbcgnn train``'s own ``--storage disk`` path).
3. ``train``: ``pbcgnn train --storage disk --epochs 1`` with a small model (16 features, one
   interaction), so that the data path is what is measured.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/data/large_dataset.py --frames 200000 \\
        --work /tmp/pbcgnn_large --results benchmarks/data/results/large_dataset_200k.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHENG = HERE.parents[1].parent / "shared" / "data" / "cheng2019_h2o_revpbe0_d3" / "cheng2019_h2o_revpbe0_d3.xyz"
TRAIN = ["--features", "16", "--filters", "16", "--interactions", "1", "--rbf", "16", "--cutoff", "5.0",
         "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--no-progress"]


def rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def make(path: Path, frames: int, seed: int) -> None:
    """Write ``frames`` rotated copies of the Cheng frames (cycled) to ``path``, one at a time, as
    extended XYZ in the shared file's layout (``ase.io.write`` takes ~12 ms a frame; this ~1)."""
    import ase.io
    source = ase.io.read(CHENG, index=":")
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for k in range(frames):
            atoms, r = source[k % len(source)], rotation(rng)
            cell, pos, forces = atoms.cell.array @ r.T, atoms.positions @ r.T, atoms.get_forces() @ r.T
            lattice = " ".join(repr(float(x)) for x in cell.ravel())
            f.write(f'{len(atoms)}\nLattice="{lattice}" Properties=species:S:1:pos:R:3:forces:R:3 '
                    f'energy={float(atoms.get_potential_energy())!r} pbc="T T T"\n')
            rows = np.concatenate([pos, forces], axis=1)
            f.write("".join(f"{s:<2} " + " ".join(f"{x:.10f}" for x in row) + "\n"
                            for s, row in zip(atoms.get_chemical_symbols(), rows)))
    os.replace(tmp, path)


def convert(path: Path, root: Path) -> None:
    """The store ``pbcgnn train --storage disk --cache-dir root`` reads, built as it builds it."""
    from pbcgnn.config import Config, DataConfig, ModelConfig
    from pbcgnn.dataset import open_frames
    t0 = time.perf_counter()
    ds = open_frames([path], Config(data=DataConfig(paths=(str(path),), storage="disk", cache_dir=str(root)),
                                    model=ModelConfig(cutoff=5.0)))
    print(json.dumps({"frames": len(ds), "seconds": time.perf_counter() - t0}))


def tree_rss(pid: int) -> dict[int, int]:
    """Resident memory (bytes) of ``pid`` and each of its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    rss, todo = {}, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/statm") as f:
                rss[p] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return rss


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return ""


def measured(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v``: its wall time, ``time``'s max RSS (the largest
    single process), the peak of the summed RSS of the process tree, and each process's peak."""
    peaks: dict[int, int] = {}
    names: dict[int, str] = {}
    with open(log, "w") as out:
        proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
        peak, t0 = 0, time.perf_counter()
        while proc.poll() is None:
            rss = tree_rss(proc.pid)
            peak = max(peak, sum(rss.values()))
            for p, value in rss.items():
                names.setdefault(p, _cmdline(p))
                peaks[p] = max(peaks.get(p, 0), value)
            time.sleep(0.2)
    text = log.read_text()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    max_rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    processes = sorted(({"cmd": names[p], "peak_rss_gb": v / 2**30} for p, v in peaks.items() if v > 50 * 2**20),
                       key=lambda x: -x["peak_rss_gb"])
    return {"command": " ".join(cmd), "wall_s": time.perf_counter() - t0, "max_rss_gb": max_rss_kb / 2**20,
            "peak_tree_rss_gb": peak / 2**30, "processes": processes, "log": str(log)}


def ddp(args, data: Path, root: Path) -> None:
    """One process and a 2-process ``torchrun`` (gloo), each reading the store with one worker per
    process: peak RSS per process and the trained weights, which must agree."""
    import torch
    if not data.exists():
        make(data, args.frames, args.seed)
    result = {"frames": args.frames, "atoms_per_frame": 192}
    common = [str(data), *TRAIN, "--storage", "disk", "--cache-dir", str(root), "--workers", "1", "--seed", "3"]
    one = [sys.executable, "-m", "pbcgnn.cli", "train", *common, "--out", str(args.work / "one")]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pbcgnn.cli", "train", *common, "--out", str(args.work / "two")]
    result["one_process"] = measured(one, args.work / "one.log", {"OMP_NUM_THREADS": "1"})
    result["two_processes"] = measured(two, args.work / "two.log", {"OMP_NUM_THREADS": "1"})
    a, b = (torch.load(args.work / name / "last.pt", weights_only=False) for name in ("one", "two"))
    result["max_weight_difference"] = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    result["validation"] = {"one": a["metrics"], "two": b["metrics"]}
    print(json.dumps(result, indent=1))
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(result, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", nargs="?", choices=["make", "convert"], help="(internal) one step in this process")
    p.add_argument("--frames", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("/tmp/pbcgnn_large"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--results", type=Path)
    p.add_argument("--train-only", action="store_true",
                   help="keep the make/convert figures of an existing --results file and its store; rerun training")
    p.add_argument("--ddp", action="store_true",
                   help="instead: one process against a 2-process torchrun on --frames frames (RSS per rank, losses)")
    args = p.parse_args()
    data, root = args.work / f"water_{args.frames}.xyz", args.work / "stores"
    if args.step == "make":
        return make(data, args.frames, args.seed)
    if args.step == "convert":
        return convert(data, root)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.ddp:
        return ddp(args, data, root)
    me = [sys.executable, __file__, "--frames", str(args.frames), "--work", str(args.work), "--seed", str(args.seed)]
    result = {"frames": args.frames, "atoms_per_frame": 192, "threads": os.environ.get("OMP_NUM_THREADS")}
    if args.train_only:
        result = {k: v for k, v in json.loads(args.results.read_text()).items() if k != "train"}
        return _train(args, data, root, result)
    if not data.exists():
        result["make"] = measured([*me[:2], "make", *me[2:]], args.work / "make.log")
    result["file_gb"] = data.stat().st_size / 2**30
    result["convert"] = measured([*me[:2], "convert", *me[2:]], args.work / "convert.log")
    line = next(x for x in Path(result["convert"]["log"]).read_text().splitlines() if x.startswith('{"frames"'))
    result["convert"]["frames_per_s"] = args.frames / json.loads(line)["seconds"]
    store = next(d for d in root.iterdir() if ".partial" not in d.name)
    result["store_gb"] = sum(f.stat().st_size for f in store.iterdir()) / 2**30
    _train(args, data, root, result)


def _train(args, data: Path, root: Path, result: dict) -> None:
    train = [sys.executable, "-m", "pbcgnn.cli", "train", str(data), *TRAIN, "--storage", "disk",
             "--cache-dir", str(root), "--workers", str(args.workers), "--out", str(args.work / "run")]
    result["train"] = measured(train, args.work / "train.log")
    print(json.dumps(result, indent=1))
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
