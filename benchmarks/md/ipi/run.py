"""Run i-PI with `pbcgnn ipi` force clients on a 64-H2O box, then `pbcgnn analyze` the run.

    python benchmarks/md/ipi/run.py benchmarks/md/ipi/pimd8.xml --clients 2 --out runs/ipi/pimd8 \
        --checkpoint data/pretrained/cheng2019_revpbe0_d3_schnet.pt \
        --structure ../shared/data/cheng2019_h2o_revpbe0_d3/cheng2019_h2o_revpbe0_d3.xyz --frame 0

Writes OUT/init.xyz (the frame, Angstrom), OUT/input.xml (the input with a unique socket address
and --steps), i-PI's files (simulation.out, simulation.pos_K.extxyz), ipi.log, client_K.log,
OUT/analysis/ (rdf.csv, analysis.json, figures) and OUT/run.json (wall time, requests per client).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import ase.io

BIN = Path(sys.executable).parent  # i-pi and pbcgnn of this environment


def write_input(template: Path, out: Path, address: str, steps: int | None) -> None:
    """The template with ``address`` and, if given, ``total_steps``, as OUT/input.xml."""
    tree = ET.parse(template)
    tree.getroot().find("ffsocket/address").text = f" {address} "
    if steps is not None:
        tree.getroot().find("total_steps").text = f" {steps} "
    tree.write(out / "input.xml")


def wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Wait until i-PI has created its socket file (or exited, or the time is up)."""
    end = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"i-PI did not open {path}; see its log")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="i-PI input template (classical.xml, pimd8.xml)")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--structure", required=True)
    parser.add_argument("--frame", type=int, default=0)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="override total_steps")
    parser.add_argument("--tabulate", action="store_true")
    parser.add_argument("--skip", type=float, default=0.0, help="ps left out of the analysis")
    parser.add_argument("--no-analyze", action="store_true", help="skip `pbcgnn analyze` (compare.py runs it)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    atoms = ase.io.read(args.structure, index=args.frame)
    atoms.calc = None
    ase.io.write(out / "init.xyz", atoms, format="extxyz")
    address = f"pbcgnn-{uuid.uuid4().hex[:10]}"
    write_input(args.input, out, address, args.steps)
    client = [str(BIN / "pbcgnn"), "ipi", os.path.abspath(args.checkpoint), "--structure", str(out / "init.xyz"),
              "--unix", address, "--device", "cpu"] + (["--tabulate"] if args.tabulate else [])
    start = time.perf_counter()
    with open(out / "ipi.log", "w") as log:
        server = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=out, stdout=log, stderr=subprocess.STDOUT)
    clients = []
    try:
        wait_for(Path(f"/tmp/ipi_{address}"), server)
        for k in range(args.clients):
            with open(out / f"client_{k}.log", "w") as log:
                clients.append(subprocess.Popen(client, stdout=log, stderr=subprocess.STDOUT))
        codes = [server.wait()] + [c.wait() for c in clients]
    finally:
        for proc in [server, *clients]:
            if proc.poll() is None:
                proc.kill()
    wall = time.perf_counter() - start
    requests = [int(m.group(1)) for k in range(args.clients)
                if (m := re.search(r"(\d+) force requests served", (out / f"client_{k}.log").read_text()))]
    steps = int(ET.parse(out / "input.xml").getroot().find("total_steps").text)
    summary = {"input": args.input.name, "steps": steps, "clients": args.clients, "tabulate": args.tabulate,
               "exit_codes": codes, "wall_s": wall, "requests_per_client": requests}
    (out / "run.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    if any(codes):
        raise SystemExit(f"a process failed (exit codes {codes}); see {out}/ipi.log and client_K.log")
    if not args.no_analyze:
        subprocess.run([str(BIN / "pbcgnn"), "analyze", str(out), "--out", str(out / "analysis"), "--r-max", "6",
                        "--bins", "600", "--skip", str(args.skip)], check=True)
    return summary


if __name__ == "__main__":
    main()
