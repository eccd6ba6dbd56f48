"""i-PI force client: a pbcgnn calculator served to an i-PI server (path-integral MD) over a socket.

i-PI (``pip install pbcgnn[ipi]`` for the server, ``i-pi input.xml``) integrates the ring
polymer and sends each bead's positions and cell to whichever client is free; the client
answers with the energy, forces and virial. The protocol is ASE's
(:class:`ase.calculators.socketio.SocketClient`, which converts Bohr/Hartree on the wire to
Angstrom/eV), so this module only adds what pbcgnn needs: one-line errors for a missing
server, a lost connection and a structure that does not match i-PI's, a count of the
requests served, and the committee spread as i-PI "extras".

i-PI sends positions and the cell only, never elements: the client takes the elements (and
their order) from its structure file, so it can check the atom count but not the elements.

Committee checkpoints send, with every answer, a JSON extras string::

    {"energy_std": eV, "forces_std": [N, 3] eV/Angstrom, "energy_std_raw": eV,
     "forces_std_raw": [N, 3] eV/Angstrom, "committee_pot": [M] Hartree}

``energy_std``/``forces_std`` are the committee's calibrated spread, ``*_raw`` the members'
sample std (as in ``calc.results``). ``committee_pot``, what i-PI's
``<ffcommittee parse_json="true">`` reads, holds the members' energies in i-PI's atomic units
moved away from their mean by the calibration (:func:`pbcgnn.model.calibration.scale_members`),
so their std is the calibrated ``energy_std``: leave i-PI's own ``alpha`` at 1 (for a checkpoint
without a calibration they are the raw energies). i-PI writes extras with
``<trajectory ...> extras </trajectory>``.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.socketio import IPIProtocol, SocketClient, SocketClosed, actualunixsocketname

from ..errors import InputError
from ..io.checks import check_supported
from ..model.calibration import scale_members, spread_ratio
from ..units import HARTREE
from .output import spread_results

__all__ = ["IPIConnectionError", "IPIResult", "IPIClient", "committee_extras", "socket_address", "serve_ipi"]

log = logging.getLogger(__name__)

#: Neighbour lists a client keeps (:class:`pbcgnn.PbcgnnCalculator`'s ``lists``): i-PI hands a
#: client any bead, and each kept list serves the beads within skin/2 of the one it was built for.
IPI_LISTS = 32


class IPIConnectionError(ConnectionError):
    """No i-PI server at the address, or it went away before ending the run (no EXIT).

    The message is one line; the CLI prints it and exits 1.
    """


def socket_address(unixsocket: str | None = None, host: str = "localhost", port: int | None = None) -> str:
    """Where the client connects, in words: ``unix socket /tmp/ipi_NAME`` (i-PI's and ASE's
    default ``sockets_prefix``) or ``HOST:PORT``."""
    if unixsocket is not None:
        return f"unix socket {actualunixsocketname(unixsocket)}"
    return f"{host}:{port}"


class _Protocol(IPIProtocol):
    """ASE's i-PI protocol plus: the atom count i-PI sends is checked, a socket closed without
    EXIT is an :class:`IPIConnectionError` (ASE takes it for EXIT), and ``extras`` (bytes)
    go out with the forces.

    Args:
        sock: the connected socket.
        atoms: the client's structure (only its atom count and source are used).
        where: the server's address in words, for messages.
    """

    def __init__(self, sock, atoms: Atoms, where: str) -> None:
        super().__init__(sock)
        self.natoms = len(atoms)
        self.source = {"path": atoms.info.get("source_path"), "frame": atoms.info.get("source_frame")}
        self.where = where
        self.extras = b""

    def recvmsg(self) -> str:
        try:
            return super().recvmsg()
        except SocketClosed:
            raise IPIConnectionError(f"lost the connection to i-PI at {self.where}: it closed the socket without "
                                     "ending the run (EXIT); did i-PI stop or crash?") from None

    def recvposdata(self):
        cell, icell, positions = super().recvposdata()  # Angstrom
        if len(positions) != self.natoms:
            raise InputError(f"i-PI sent {len(positions)} atoms, the structure has {self.natoms}; i-PI sends "
                             "positions only, so the client takes elements and their order from --structure: "
                             "give it the structure i-PI was started with", **self.source)
        return cell, icell, positions

    def sendforce(self, energy, forces, virial, **kwargs) -> None:
        if self.extras:  # else ASE's default: one zero byte
            kwargs["morebytes"] = np.frombuffer(self.extras, dtype=np.byte)
        super().sendforce(energy, forces, virial, **kwargs)


class IPIClient(SocketClient):
    """ASE's :class:`~ase.calculators.socketio.SocketClient` with :class:`_Protocol`: counts the
    force requests it served and sends the committee spread as extras.

    Args:
        atoms: the structure, with the calculator attached (``atoms.calc``).
        unixsocket: i-PI's socket ``address`` (the file ``/tmp/ipi_NAME``), or None for TCP.
        host, port: the TCP address when ``unixsocket`` is None.

    Raises:
        IPIConnectionError: nothing listens at the address.
    """

    def __init__(self, atoms: Atoms, unixsocket: str | None = None, host: str = "localhost",
                 port: int | None = None) -> None:
        self.where = socket_address(unixsocket, host, port)
        try:
            super().__init__(host=host, port=port, unixsocket=unixsocket)
        except OSError as err:
            reason = "the socket file does not exist" if isinstance(err, FileNotFoundError) else err.strerror or err
            raise IPIConnectionError(f"no i-PI server listening at {self.where} ({reason}): start i-pi first and "
                                     "use the address of its <ffsocket>") from None
        self.protocol = _Protocol(self.protocol.socket, atoms, self.where)
        self.log = self.protocol.log
        self.requests = 0  #: force requests served

    def calculate(self, atoms: Atoms, use_stress: bool):
        energy, forces, virial = super().calculate(atoms, use_stress)  # eV, eV/Angstrom, eV
        self.requests += 1
        self.protocol.extras = committee_extras(atoms.calc)
        return energy, forces, virial


def committee_extras(calc: Calculator) -> bytes:
    """The extras JSON (UTF-8) of a committee's last result; empty for a single model."""
    spread = spread_results(calc)
    if not spread:
        return b""
    extras = {k: np.asarray(v).tolist() for k, v in spread.items()}
    if "energies" in calc.results:
        energies = torch.as_tensor(np.asarray(calc.results["energies"], dtype=np.float64))  # [M] eV
        if "energy_std_raw" in spread:  # the members as a calibrated committee
            std, raw = (torch.tensor(float(spread[k]), dtype=torch.float64) for k in ("energy_std", "energy_std_raw"))
            ratio = spread_ratio(std, raw)
            energies = scale_members(energies, ratio)
        extras["committee_pot"] = (energies.numpy() / HARTREE).tolist()
    return json.dumps(extras).encode()


@dataclass
class IPIResult:
    """What a client did: ``requests`` force evaluations served in ``wall_s`` seconds."""

    requests: int
    wall_s: float


def serve_ipi(calc: Calculator, atoms: Atoms, unixsocket: str | None = None, host: str = "localhost",
              port: int | None = None) -> IPIResult:
    """Connect to an i-PI server and answer its force requests until it ends the run (EXIT).

    Each request: i-PI's positions and cell (Angstrom) replace those of a copy of ``atoms``;
    the answer is the energy (eV), forces (eV/Angstrom) and virial ``-V sigma`` (eV; zero for
    a cell not periodic in x, y and z). Several clients may serve one server.

    Args:
        calc: ASE calculator in eV and Angstrom (e.g. :class:`pbcgnn.PbcgnnCalculator`).
        atoms: the structure i-PI was started with: elements in i-PI's order.
        unixsocket: i-PI's unix socket ``address`` (file ``/tmp/ipi_NAME``); None: TCP.
        host, port: i-PI's TCP address when ``unixsocket`` is None.

    Raises:
        IPIConnectionError: no server at the address, or it went away mid-run.
        InputError: i-PI sent another atom count, or the model cannot take the structure.
    """
    if hasattr(calc, "elements") and hasattr(calc, "periodic"):  # refuse before connecting
        check_supported(atoms, calc.elements, calc.periodic)
    atoms = atoms.copy()
    atoms.calc = calc
    client = IPIClient(atoms, unixsocket=unixsocket, host=host, port=port)
    log.info("connected to i-PI at %s; serving %d atoms (%s)", client.where, len(atoms), atoms.get_chemical_formula())
    start = time.perf_counter()
    try:
        client.run(atoms, use_stress=bool(np.all(atoms.pbc)))
    except IPIConnectionError:
        raise
    except OSError as err:  # reset, broken pipe, or a socket closed in the middle of a message
        raise IPIConnectionError(f"lost the connection to i-PI at {client.where} after {client.requests} "
                                 f"requests: {err.strerror or type(err).__name__}") from None
    finally:
        client.close()
    result = IPIResult(client.requests, time.perf_counter() - start)
    log.info("i-PI ended the run: %d force requests served in %.1f s", result.requests, result.wall_s)
    return result
