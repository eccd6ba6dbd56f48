"""Shared fixtures: paths to real data and small float64 water boxes."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms

REPO = Path(__file__).resolve().parents[1]
FILES = Path(__file__).resolve().parent / "files"
BUNDLED = REPO / "data"


def _shared_data() -> Path:
    env = os.environ.get("PBCGNN_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _store_cache(tmp_path_factory):
    """Frame stores written without --cache-dir go to a temporary folder, never ~/.cache."""
    os.environ["PBCGNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("stores"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $PBCGNN_SHARED_DATA). CI always has it; elsewhere tests skip."""
    path = _shared_data()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data not found at {path}")
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def bench_script() -> Callable[[str], ModuleType]:
    """A loader of benchmark scripts (``benchmarks/`` is not a package): ``bench_script("accuracy/run.py")``
    runs the file as a fresh module each call, so no test sees another's changes to it."""
    def load(relative: str) -> ModuleType:
        path = REPO / "benchmarks" / relative
        spec = importlib.util.spec_from_file_location("bench_" + relative.removesuffix(".py").replace("/", "_"), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="session")
def files() -> Path:
    """tests/files: tiny valid and broken inputs."""
    return FILES


@pytest.fixture(scope="session")
def bundled_n2p2() -> Path:
    """The bundled 16-frame RPBE-D3 water file (Bohr, Hartree)."""
    return BUNDLED / "n2p2_h2o_rpbe_d3" / "input.data"


@pytest.fixture
def one_thread():
    """For bit-exact comparisons between runs. Multi-threaded CPU kernels can differ in the last
    bits between two runs of the same training (seen: a resumed run at 2 threads, 1e-8 relative
    off an uninterrupted one in some repeats, with and without the final anneal)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------ a real i-PI server
IPI_INPUT = """<simulation verbosity='low' floatformat='%25.16e'>
  <output prefix='sim'>
    <properties stride='1' filename='out'> [ {properties} ] </properties>
    <trajectory filename='pos' stride='1' format='ase'> positions </trajectory>
  </output>
  <total_steps> {steps} </total_steps>
  <prng><seed> 7 </seed></prng>
  <ffsocket name='client' mode='unix' pbc='false'><address> {address} </address></ffsocket>
  <system>
    <initialize nbeads='{beads}'>
      <file mode='ase'> init.xyz </file>
      <velocities mode='thermal' units='kelvin'> 300 </velocities>
    </initialize>
    <forces><force forcefield='client'> </force></forces>
    <motion mode='dynamics'>{dynamics}</motion>{ensemble}
  </system>
</simulation>
"""
NVE = "<dynamics mode='nve'><timestep units='femtosecond'> 0.5 </timestep></dynamics>"
NVT = ("<dynamics mode='nvt'><timestep units='femtosecond'> 0.5 </timestep>"
       "<thermostat mode='pile_l'><tau units='femtosecond'> 100 </tau></thermostat></dynamics>")


@dataclass
class IpiRun:
    """What an i-PI run left: its folder (``sim.out``, ``sim.pos_*``), exit codes and logs."""

    folder: Path
    server: tuple[int, str]
    clients: list[tuple[int, str]]

    def potential_at_step0(self, column: str) -> float:
        """The step-0 value of the ``column`` property (e.g. ``potential{ase}``) in ``sim.out``."""
        path = self.folder / "sim.out"
        header = [line for line in path.read_text().splitlines() if line.startswith("#")]
        index = next(int(re.search(r"column\s+(\d+)", h).group(1)) - 1 for h in header if column in h)
        rows = np.loadtxt(path, ndmin=2)
        return float(rows[rows[:, 0] == 0][0, index])


@pytest.fixture
def run_ipi(tmp_path) -> Callable[..., IpiRun]:
    """``run_ipi(atoms, client, clients=1, steps=3, beads=1, properties=..., nvt=False)`` runs i-PI 3
    (``pip install 'pbcgnn[ipi]'``; skips without it) in ``tmp_path`` on a fresh unix socket, starts
    ``clients`` copies of ``client(address)`` (a command line) once the socket exists, and waits for all."""
    pytest.importorskip("ipi")
    from ase.calculators.socketio import actualunixsocketname

    ipi = Path(sys.executable).parent / "i-pi"
    if not ipi.is_file():
        pytest.skip(f"ipi is installed but {ipi} is not")

    def run(atoms: Atoms, client: Callable[[str], list[str]], clients: int = 1, steps: int = 3, beads: int = 1,
            properties: str = "step, potential{ase}", nvt: bool = False) -> IpiRun:
        ase.io.write(tmp_path / "init.xyz", atoms, format="extxyz")
        address = f"pbcgnn-test-{uuid.uuid4().hex[:12]}"
        ensemble = "<ensemble><temperature units='kelvin'> 300 </temperature></ensemble>" if nvt else ""
        (tmp_path / "input.xml").write_text(IPI_INPUT.format(
            properties=properties, steps=steps, address=address, beads=beads, dynamics=NVT if nvt else NVE,
            ensemble=ensemble))
        server = subprocess.Popen([sys.executable, str(ipi), "input.xml"], cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs: list[subprocess.Popen] = []
        try:
            end = time.monotonic() + 600  # limits only against a hang: a loaded machine is slow
            while not Path(actualunixsocketname(address)).exists():
                assert server.poll() is None and time.monotonic() < end, "i-PI did not open its socket"
                time.sleep(0.1)
            procs = [subprocess.Popen(client(address), cwd=tmp_path, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True) for _ in range(clients)]
            logs = [p.communicate(timeout=900)[0] for p in procs]
            server_log = server.communicate(timeout=600)[0]
        finally:
            for proc in [server, *procs]:
                if proc.poll() is None:
                    proc.kill()
            Path(actualunixsocketname(address)).unlink(missing_ok=True)
        return IpiRun(tmp_path, (server.returncode, server_log),
                      [(p.returncode, log) for p, log in zip(procs, logs)])

    return run


# ------------------------------------------------------------------ streamed evaluation and selection
def _tiny_model_config(size: int = 1):
    from pbcgnn.config import CommitteeConfig, Config, DataConfig, ModelConfig

    return Config(data=DataConfig(paths=("unused.xyz",)), committee=CommitteeConfig(size=size),
                  model=ModelConfig(hidden_channels=8, num_filters=8, num_interactions=1, num_rbf=6, cutoff=3.0))


@pytest.fixture(scope="session")
def water_model(tmp_path_factory) -> Path:
    """The checkpoint of an untrained tiny H/O model (3 A cutoff)."""
    from pbcgnn.checkpoint import build_model, save_checkpoint

    config = _tiny_model_config()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("water_model") / "best.pt"
    save_checkpoint(path, {"config": config.to_dict(), "model": build_model(config).state_dict(),
                           "elements": [1, 8], "metrics": {}, "epoch": 0})
    return path


@pytest.fixture(scope="session")
def random_committee(tmp_path_factory) -> Path:
    """The checkpoint of a committee of two random tiny H/O models, with a power-law spread calibration."""
    from pbcgnn.checkpoint import build_model, combine_checkpoints, save_checkpoint
    from pbcgnn.model.calibration import Calibration, PowerLaw

    config = _tiny_model_config(size=2)
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(config)
        with torch.no_grad():  # an untrained readout starts at zero: members would agree exactly
            for param in model.parameters():
                param.add_(0.3 * torch.randn_like(param))
        members.append({"config": config.replace(committee={"size": 1}).to_dict(), "epoch": 0, "elements": [1, 8],
                        "model": model.state_dict()})
    path = tmp_path_factory.mktemp("committee") / "best.pt"
    calibration = Calibration(energy=PowerLaw(2.5, 1.0), forces=PowerLaw(0.3, 0.5))
    save_checkpoint(path, {**combine_checkpoints(config, members, [path.parent] * 2),
                           "calibration": calibration.to_dict()})
    return path


@pytest.fixture(scope="session")
def water_frames() -> Callable[..., list[Atoms]]:
    """``water_frames(n, seed=0)``: ``n`` labelled single-water frames in a 6 A box (3 atoms: fast)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    def make(n: int, seed: int = 0) -> list[Atoms]:
        rng = np.random.default_rng(seed)
        base = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]) + 3.0
        frames = []
        for _ in range(n):
            atoms = Atoms("OH2", positions=base + rng.normal(0, 0.05, (3, 3)), cell=np.eye(3) * 6.0, pbc=True)
            atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal(-14.0, 0.1)),
                                               forces=rng.normal(0, 1, (3, 3)))
            frames.append(atoms)
        return frames

    return make


@pytest.fixture
def small_chunks(monkeypatch):
    """Streamed passes predict chunks of 4 frames (with batches of 2: a 16-frame file in 4 chunks)."""
    import importlib

    predict = importlib.import_module("pbcgnn.evaluation.predict")  # the package exports a function of this name
    monkeypatch.setattr(predict, "CHUNK_FRAMES", 4)
