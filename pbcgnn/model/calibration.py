r"""Calibration of a committee's spread: the map from the members' standard deviation to an uncertainty.

A committee's sample standard deviation :math:`s` (over members, ``correction=1``) ranks
errors but is rarely their size: members trained on the same frames agree more than their
error warrants. The calibrated uncertainty, per quantity, is a power law

.. math::
    \sigma = a\, s^{b}

applied to

* ``energy``: the energy per atom, :math:`s = s_E / N` in eV/atom; the calibrated std of the
  total energy is :math:`N\, a\, (s_E / N)^{b}` eV;
* ``forces``: every force component, :math:`s` in eV/Angstrom.

:math:`b = 1` is a plain scale. :math:`a` carries eV-based units (eV/atom, eV/Angstrom) to the
power :math:`1 - b`, so a stored calibration holds only in pbcgnn's internal units. The identity
(:math:`a = b = 1`) is what a committee without a fitted calibration uses: its spread is then the
raw standard deviation. Stress spreads are not calibrated (no stress labels to fit them on).

This module applies a calibration and stores it as plain values; fitting it on labelled frames
and scoring it is :mod:`pbcgnn.evaluation.calibration`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError

__all__ = ["PowerLaw", "Calibration", "CALIBRATED", "power_law", "spread_ratio", "scale_members"]

#: The quantities a calibration covers, in the order of :class:`Calibration`'s fields.
CALIBRATED = ("energy", "forces")


@dataclass(frozen=True)
class PowerLaw:
    """:math:`\\sigma = a\\, s^{b}`: a calibrated std from a raw one (numpy arrays or tensors).

    Args:
        a: prefactor, > 0 (eV-based units to the power 1 - b).
        b: exponent, > 0 (1: a plain scale), so the order of spreads is kept.
    """

    a: float = 1.0
    b: float = 1.0

    def __call__(self, s):
        # b == 1 exactly: a product, so a scale is bit-for-bit raw * a (as power_law)
        return self.a * s if self.b == 1.0 else self.a * s**self.b

    @property
    def is_identity(self) -> bool:
        return self.a == 1.0 and self.b == 1.0


@dataclass(frozen=True)
class Calibration:
    """Per-quantity power laws for a committee's spread (see the module docstring).

    Attributes:
        energy: applied to the energy std per atom (eV/atom).
        forces: applied to each force-component std (eV/Angstrom).
        fitted_on: what the calibration was fitted on, in words ("" for the identity).
        n_frames: frames it was fitted on (0 for the identity).
        details: plain values describing the fit (per quantity: the form chosen and the
            cross-validated negative log-likelihoods of both forms).
    """

    energy: PowerLaw = PowerLaw()
    forces: PowerLaw = PowerLaw()
    fitted_on: str = ""
    n_frames: int = 0
    details: dict = field(default_factory=dict)

    @property
    def is_identity(self) -> bool:
        """Whether spreads pass unchanged (no fitted calibration)."""
        return self.energy.is_identity and self.forces.is_identity

    def energy_std(self, std, natoms):
        """Calibrated std of total energies [B] eV from the raw std [B] eV and atom counts [B]."""
        return natoms * self.energy(std / natoms)

    def forces_std(self, std):
        """Calibrated std of force components [N, 3] eV/Angstrom from the raw std [N, 3]."""
        return self.forces(std)

    def describe(self) -> str:
        """One line: the laws per quantity, or that the spreads are raw."""
        if self.is_identity:
            return "none (spreads are the members' raw standard deviations)"
        laws = ", ".join(f"{q} {_law(getattr(self, q))}" for q in CALIBRATED)
        return f"{laws} (s in eV/atom and eV/A; fitted on {self.n_frames} frames of {self.fitted_on})"

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint (``torch.load(weights_only=True)`` reads them)."""
        laws = {q: {"a": float(getattr(self, q).a), "b": float(getattr(self, q).b)} for q in CALIBRATED}
        return {**laws, "fitted_on": self.fitted_on, "n_frames": int(self.n_frames), "details": dict(self.details)}

    @classmethod
    def from_dict(cls, raw: Any, path: str | os.PathLike | None = None) -> Calibration:
        """The calibration a checkpoint stores; ``None`` (older checkpoints) is the identity.

        Raises:
            InputError: not a table of positive finite ``a`` and ``b`` per quantity, naming ``path``.
        """
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise InputError(f"expected the calibration as a table, found {type(raw).__name__}", path=path)
        laws = {}
        for q in CALIBRATED:
            law = raw.get(q, {"a": 1.0, "b": 1.0})
            values = [law.get(k) for k in ("a", "b")] if isinstance(law, dict) else [None, None]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                       for v in values):
                raise InputError(f"expected calibration.{q} with positive finite a and b, found {law!r:.60}",
                                 path=path)
            laws[q] = PowerLaw(float(values[0]), float(values[1]))
        details = raw.get("details", {})
        return cls(**laws, fitted_on=str(raw.get("fitted_on", "")), n_frames=int(raw.get("n_frames", 0)),
                   details=details if isinstance(details, dict) else {})


def _law(law: PowerLaw) -> str:
    return f"{law.a:.3g} s" if law.b == 1.0 else f"{law.a:.3g} s^{law.b:.3g}"


def power_law(s: Tensor, a: float, b: float) -> Tensor:
    """:math:`a s^b` of a tensor, for TorchScript (:class:`PowerLaw` is the Python form)."""
    return a * s if b == 1.0 else a * s**b


def spread_ratio(std: Tensor, std_raw: Tensor) -> Tensor:
    """Calibrated over raw std [B] (0 where the raw std is 0: members that agree stay together)."""
    return torch.where(std_raw > 0, std / torch.where(std_raw > 0, std_raw, torch.ones_like(std_raw)),
                       torch.zeros_like(std))


def scale_members(energies: Tensor, ratio: Tensor) -> Tensor:
    r"""The members' energies [M, ...] moved away from their mean by ``ratio`` [...]:
    :math:`\bar E + r\,(E_m - \bar E)`, whose sample std is the calibrated one (a calibrated
    committee for engines that compute the spread themselves, as i-PI's ``ffcommittee``)."""
    mean = energies.mean(0, keepdim=True)
    return mean + (energies - mean) * ratio
