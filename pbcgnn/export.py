"""The model as a portable artifact: a metatomic TorchScript file for LAMMPS, i-PI, ASE and TorchSim.

:func:`export_metatomic` writes a checkpoint's model as a metatomic ``AtomisticModel``
(:class:`pbcgnn.metatomic_model.EnergyModel` inside): the engine computes a full neighbour
list at the model's cutoff and takes forces and stress by autograd of the ``"energy"``
output through positions and cell. The function is the one :class:`pbcgnn.PbcgnnCalculator`
evaluates, ``E = sum_i (s y_i + E0[Z_i])`` in eV (the same layers, weights, references and
scale; sums by ``index_add`` instead of the chunked evaluation path: equal to float rounding).
A committee exports its mean energy, its members as ``"energy_ensemble"`` and its calibrated
energy std as ``"energy_uncertainty"``, both with the checkpoint's calibration applied.

metatomic is optional (``pip install 'pbcgnn[metatomic]'``) and imported inside the functions.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from . import __version__
from .checkpoint import atomic_output, load_checkpoint
from .errors import InputError, ensure_writable_dir
from .model import Committee, EnergyModel
from .model._torch_compat import unpatched_index_select

__all__ = ["DTYPES", "REFERENCES", "SCHNET_REFERENCE", "export_metatomic", "import_metatomic"]

#: The dtypes a model can be exported in (metatomic's ``capabilities.dtype``).
DTYPES = ("float32", "float64")
SCHNET_REFERENCE = ("K. T. Schuett, H. E. Sauceda, P.-J. Kindermans, A. Tkatchenko and K.-R. Mueller, "
                    "SchNet - A deep learning architecture for molecules and materials, "
                    "J. Chem. Phys. 148, 241722 (2018), https://doi.org/10.1063/1.5019779")
PAINN_REFERENCE = ("K. T. Schuett, O. T. Unke and M. Gastegger, Equivariant message passing for the prediction "
                   "of tensorial properties and molecular spectra, ICML 2021, PMLR 139, 9377-9388, "
                   "https://arxiv.org/abs/2102.03150")
#: Architecture -> (name, paper) for the exported model's metadata.
REFERENCES = {"schnet": ("SchNet", SCHNET_REFERENCE), "painn": ("PaiNN", PAINN_REFERENCE)}


def export_metatomic(checkpoint: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32") -> Path:
    """Write the model of ``checkpoint`` to ``out`` as a metatomic ``AtomisticModel`` (TorchScript).

    Capabilities: the checkpoint's elements, Angstrom and eV, ``interaction_range`` = cutoff x
    interactions (message passing: what ghost atoms must cover), devices cuda then cpu,
    outputs ``"energy"`` (per system or per atom) and, for a committee, ``"energy_ensemble"``
    (one property per member, moved away from their mean so their std is the calibrated one) and
    ``"energy_uncertainty"`` (per system: the calibrated std of the energy, eV; the identity
    calibration of a checkpoint without one gives the members' raw std). The file is written next
    to ``out`` and renamed, so a failed export leaves an existing ``out`` intact.

    Args:
        checkpoint: a pbcgnn checkpoint (``best.pt``), single model or committee.
        out: the model file to write (``model.pt``).
        dtype: ``"float32"`` (default; total energies then carry float32 rounding, ~4 meV at
            -33 keV) or ``"float64"``: the dtype engines must pass positions and cells in.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: metatomic is not installed, an unknown dtype, ``out`` a folder, or not an
            intact pbcgnn checkpoint.
        OutputError: ``out`` cannot be written (its folder is checked before any work).
    """
    if dtype not in DTYPES:
        raise InputError(f"expected a dtype in {', '.join(DTYPES)}, found {dtype!r}")
    if Path(out).is_dir():
        raise InputError("expected a file name for the exported model, found a folder", path=out)
    ensure_writable_dir(Path(out).parent)  # before loading and compiling the model
    model, ckpt = load_checkpoint(checkpoint, dtype=dtype)
    mta = import_metatomic()
    from .metatomic_model import EnergyModel  # the optional engine's module: only once metatomic imports
    members = list(model.members) if isinstance(model, Committee) else [model]
    elements = sorted(int(z) for z in ckpt.get("elements") or [])
    if not elements:
        raise InputError("expected the checkpoint to list its training elements, found none", path=checkpoint)
    law = model.calibration.energy if isinstance(model, Committee) else None
    energy_model = EnergyModel(members, (law.a, law.b) if law is not None else (1.0, 1.0))
    atomistic = mta.AtomisticModel(energy_model.eval(), _metadata(mta, members, ckpt, checkpoint),
                                   _capabilities(mta, members, elements, dtype))
    torch.jit.script(atomistic)  # a model TorchScript cannot compile is a bug: raise it before writing
    with atomic_output(out, "torch.jit.save") as tmp:
        atomistic.save(tmp)
    return Path(out)


def import_metatomic() -> ModuleType:
    """``metatomic.torch``, imported so that it works in a process that imported pbcgnn.

    metatensor compiles TorchScript functions on import, which torch_geometric's replacement
    of ``torch.index_select`` breaks; the import runs with torch's own function
    (:func:`pbcgnn.model._torch_compat.unpatched_index_select`). Call it before importing
    ``metatomic_ase`` or ``metatensor.torch`` after pbcgnn; afterwards they import normally.

    Raises:
        InputError: metatomic is not installed, saying how to install it.
    """
    try:
        with unpatched_index_select():
            import metatomic.torch as mta
    except ImportError as err:
        raise InputError(f"export needs metatomic: pip install 'pbcgnn[metatomic]' ({err})") from None
    return mta


def _capabilities(mta: Any, members: list[EnergyModel], elements: list[int], dtype: str) -> Any:
    """metatomic ``ModelCapabilities``: what the exported model computes, in which units and dtype."""
    outputs = {"energy": mta.ModelOutput(unit="eV", sample_kind="atom", description="potential energy")}
    if len(members) > 1:
        outputs["energy_ensemble"] = mta.ModelOutput(
            unit="eV", sample_kind="atom",
            description=f"energies of the {len(members)} committee members, spread as calibrated")
        outputs["energy_uncertainty"] = mta.ModelOutput(
            unit="eV", sample_kind="system", description="calibrated committee std of the energy")
    first = members[0]
    return mta.ModelCapabilities(
        outputs=outputs,
        atomic_types=elements,
        interaction_range=first.cutoff * first.num_interactions,  # Angstrom: cutoff x message-passing steps
        length_unit="angstrom",
        supported_devices=["cuda", "cpu"],
        dtype=dtype,
    )


def _metadata(mta: Any, members: list[EnergyModel], ckpt: dict[str, Any], checkpoint: str | os.PathLike) -> Any:
    """metatomic ``ModelMetadata``: name, description (architecture and energy) and references."""
    first = members[0]
    name, paper = REFERENCES[first.architecture]
    committee = f", a committee of {len(members)}" if len(members) > 1 else ""
    description = (
        f"{name} for periodic systems ({first.hidden_channels} features, {first.num_interactions} interactions, "
        f"{first.num_rbf} radial functions, cutoff {first.cutoff:g} A{committee}) trained with pbcgnn "
        f"{ckpt.get('version', '?')}. E = sum_i (s y_i + E0[Z_i]) in eV with per-element reference "
        "energies E0 and scale s; forces and stress by autograd."
    )
    return mta.ModelMetadata(
        name=f"pbcgnn {name} ({Path(checkpoint).name})",
        description=description,
        references={"architecture": [paper], "implementation": [f"pbcgnn {__version__}"]},
        extra={"pbcgnn_version": str(__version__), "checkpoint": str(Path(checkpoint).name),
               "epoch": str(ckpt.get("epoch", ""))},
    )
