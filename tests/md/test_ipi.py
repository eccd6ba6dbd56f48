"""`pbcgnn ipi`: a real i-PI server with two clients (PIMD, 4 beads), and every error path against
ASE's own i-PI server side (``SocketServer``) in a thread."""
from __future__ import annotations

import json
import re
import socket
import sys
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.socketio import SocketServer
from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn.analysis import analyze
from pbcgnn.calculator import PbcgnnCalculator
from pbcgnn.errors import InputError
from pbcgnn.io import read_frames
from pbcgnn.md.ipi import IPIConnectionError, serve_ipi
from pbcgnn.model import SchNet
from pbcgnn.model.committee import Committee
from pbcgnn.units import HARTREE

REPO = Path(__file__).resolve().parents[2]
PRETRAINED = REPO / "data" / "pretrained" / "cheng2019_revpbe0_d3_schnet.pt"
#: 40 steps: long enough that the second client connects while the first serves (the tiny model is fast).
BEADS, STEPS = 4, 40

def _address() -> str:
    return f"pbcgnn-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def water48(bundled_n2p2):
    """A real 16-H2O box (48 atoms, Angstrom)."""
    return read_frames(bundled_n2p2)[0]


@pytest.fixture
def water_file(water48, tmp_path):
    path = tmp_path / "water.xyz"
    ase.io.write(path, water48, format="extxyz")
    return path


def _served(text: str) -> int:
    m = re.search(r"(\d+) force requests served", text)
    assert m, text
    return int(m.group(1))


def test_two_clients_serve_a_pimd_run(water48, run_ipi, md_checkpoint):
    """i-PI (4 beads, all at one geometry at step 0) with two `pbcgnn ipi` clients: both serve
    beads, both exit 0 when i-PI ends, and i-PI's step-0 potential is the calculator's energy.
    A tiny model (the protocol is under test, not the model): no limit but one against a hang."""
    atoms = water48.repeat((2, 2, 1))  # 192 atoms
    ipi = run_ipi(atoms, lambda address: [sys.executable, "-m", "pbcgnn.cli", "ipi", str(md_checkpoint),
                                          "--structure", "init.xyz", "--unix", address, "--device", "cpu"],
                  clients=2, steps=STEPS, beads=BEADS, nvt=True,
                  properties="step, time{picosecond}, conserved{ase}, temperature{kelvin}, potential{ase}, "
                             "kinetic_cv{ase}, volume{angstrom3}")
    assert ipi.server[0] == 0, ipi.server[1][-2000:]
    assert [rc for rc, _ in ipi.clients] == [0, 0], ipi.clients
    served = [_served(log) for _, log in ipi.clients]
    assert min(served) > 0 and sum(served) == BEADS * (STEPS + 1), served
    calc = PbcgnnCalculator.from_checkpoint(md_checkpoint)
    expected = calc.get_potential_energy(atoms)  # every bead starts at the structure
    assert abs(ipi.potential_at_step0("potential{ase}") - expected) / len(atoms) < 1e-5
    summary = analyze(ipi.folder, ipi.folder / "analysis", plot=False)  # i-PI's own files, read back
    assert summary["ipi_beads"] == BEADS and summary["frames"] == BEADS * (STEPS + 1)
    assert summary["time_ps"] == pytest.approx([0.0, STEPS * 0.5e-3])


# ------------------------------------------------------ ASE's server side as a stand-in for i-PI
@contextmanager
def fake_ipi(script):
    """A listening ASE ``SocketServer`` on a fresh unix socket; ``script(server)`` runs in a thread.
    Yields ``(address, results)``; ``results`` gets what the script returned or raised."""
    address = _address()
    server = SocketServer(unixsocket=address)
    results: list = []

    def run() -> None:
        try:
            results.append(script(server))
        except Exception as err:  # the client went away: part of the error tests
            results.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield address, results
    finally:
        thread.join(timeout=30)
        server.close()


def _ends_after_one(atoms):
    def script(server):
        out = server.calculate(atoms)
        server.protocol.end()  # i-PI's EXIT
        return out
    return script


def _cli(*args):
    return CliRunner().invoke(main, ["ipi", str(PRETRAINED), *args])


def _one_line_error(result, *words):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: ")
    for word in words:
        assert word in result.output, result.output


def test_cli_serves_until_exit(water48, water_file):
    with fake_ipi(_ends_after_one(water48)) as (address, results):
        result = _cli("--structure", str(water_file), "--unix", address, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert _served(result.output) == 1
    atoms = water48.copy()
    atoms.calc = PbcgnnCalculator.from_checkpoint(PRETRAINED)
    assert results[0]["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-6 * len(atoms))
    np.testing.assert_allclose(results[0]["forces"], atoms.get_forces(), atol=1e-8)
    virial = -atoms.get_volume() * atoms.get_stress(voigt=False)  # eV; i-PI's sign, as ASE's server reads it
    np.testing.assert_allclose(results[0]["virial"], virial, atol=1e-8)


def test_no_server_is_one_line(water_file):
    _one_line_error(_cli("--structure", str(water_file), "--unix", _address()),
                    "no i-PI server listening at unix socket /tmp/ipi_pbcgnn-test-", "socket file does not exist")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    _one_line_error(_cli("--structure", str(water_file), "--host", "localhost", "--port", str(port)),
                    f"no i-PI server listening at localhost:{port}", "refused")


def test_other_atom_count_is_refused(water48, water_file):
    with fake_ipi(_ends_after_one(water48.repeat((2, 1, 1)))) as (address, _):
        result = _cli("--structure", str(water_file), "--unix", address)
    _one_line_error(result, "i-PI sent 96 atoms, the structure has 48", "positions only", str(water_file))


def test_lost_connection_is_one_line(water48, water_file):
    def script(server):
        server.calculate(water48)
        server.close()  # no EXIT: as if i-PI crashed
    with fake_ipi(script) as (address, _):
        result = _cli("--structure", str(water_file), "--unix", address)
    _one_line_error(result, "lost the connection to i-PI", "without ending the run")


def test_connection_lost_mid_message_is_one_line(water_file):
    def script(server):
        server._accept()
        server.protocol.sendmsg("POSDATA")  # and then nothing: the positions never come
        server.close()
    with fake_ipi(script) as (address, _):
        result = _cli("--structure", str(water_file), "--unix", address)
    _one_line_error(result, "lost the connection to i-PI at unix socket", "after 0 requests")


def test_address_options_are_checked(water_file):
    for args in ([], ["--unix", "a", "--port", "31415"], ["--host", "localhost"]):
        result = _cli("--structure", str(water_file), *args)
        assert result.exit_code == 2 and "either --unix NAME or --host HOST --port PORT" in result.output


def test_unknown_element_is_refused_before_connecting(water48):
    atoms = water48.copy()
    atoms.numbers[0] = 29
    calc = PbcgnnCalculator.from_checkpoint(PRETRAINED)
    with pytest.raises(InputError, match="Cu not in the model's training set"):
        serve_ipi(calc, atoms, unixsocket=_address())  # nothing listens: the check comes first
    with pytest.raises(IPIConnectionError, match="no i-PI server"):
        serve_ipi(calc, water48, unixsocket=_address())


def test_committee_sends_its_spread_as_extras(water48):
    torch.manual_seed(1)
    members = [SchNet(16, 16, 1, 8, cutoff=3.5).double() for _ in range(3)]
    for m in members:
        torch.nn.init.normal_(m.lin2.weight, std=0.3)
    calc = PbcgnnCalculator(Committee(members).eval(), skin=0.5)
    with fake_ipi(_ends_after_one(water48)) as (address, results):
        assert serve_ipi(calc, water48, unixsocket=address).requests == 1
    extras = json.loads(bytes(results[0]["morebytes"]).decode())
    assert extras["energy_std"] == pytest.approx(calc.results["energy_std"], rel=1e-12)
    np.testing.assert_allclose(extras["forces_std"], calc.results["forces_std"], rtol=1e-12)
    np.testing.assert_allclose(np.array(extras["committee_pot"]) * HARTREE, calc.results["energies"], rtol=1e-12)


def test_calibrated_committee_sends_members_with_the_calibrated_spread(water48):
    """committee_pot moves the members away from their mean so i-PI computes the calibrated std."""
    from pbcgnn.md.ipi import committee_extras
    from pbcgnn.model.calibration import Calibration, PowerLaw

    torch.manual_seed(1)
    members = [SchNet(16, 16, 1, 8, cutoff=3.5).double() for _ in range(3)]
    for m in members:
        torch.nn.init.normal_(m.lin2.weight, std=0.3)
    calc = PbcgnnCalculator(Committee(members, Calibration(PowerLaw(2.0, 0.8), PowerLaw(5.0))).eval(), skin=0.5)
    atoms = water48.copy()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    extras = json.loads(committee_extras(calc).decode())
    pot = np.array(extras["committee_pot"]) * HARTREE  # [3] eV
    raw = float(np.std(calc.results["energies"], ddof=1))
    assert extras["energy_std_raw"] == pytest.approx(raw, rel=1e-12)
    assert extras["energy_std"] == pytest.approx(48 * 2.0 * (raw / 48) ** 0.8, rel=1e-12)
    assert np.std(pot, ddof=1) == pytest.approx(extras["energy_std"], rel=1e-10)
    assert pot.mean() == pytest.approx(energy, rel=1e-13)
    np.testing.assert_allclose(extras["forces_std"], 5.0 * np.array(extras["forces_std_raw"]), rtol=1e-12)
