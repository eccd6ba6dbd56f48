"""Radial basis and smooth cutoff envelope: functions of the edge length only."""
from __future__ import annotations

import math

import torch

__all__ = ["GaussianRBF", "BesselRBF", "CosineCutoff"]


class GaussianRBF(torch.nn.Module):
    r"""Gaussian radial basis on evenly spaced centres.

    .. math::
        e_k(d) = \exp\left(-\gamma\,(d - \mu_k)^2\right), \qquad
        \mu_k = \mathrm{start} + k\,\Delta, \qquad \gamma = \frac{1}{2\Delta^2},

    with :math:`\Delta = (\mathrm{cutoff} - \mathrm{start}) / (K - 1)`: each Gaussian has
    standard deviation :math:`\Delta`, so neighbours overlap and cover [start, cutoff]. The basis
    itself does not vanish at the cutoff; smoothness there comes from :class:`CosineCutoff`.

    Args:
        num_rbf: number of Gaussians :math:`K` (at least 2).
        cutoff: last centre, Angstrom.
        start: first centre, Angstrom (default 0).

    Shapes:
        - **input:** distances :math:`(|\mathcal{E}|)` in Angstrom
        - **output:** :math:`(|\mathcal{E}|, K)`, dimensionless, in (0, 1]
    """

    def __init__(self, num_rbf: int, cutoff: float, start: float = 0.0) -> None:
        super().__init__()
        if num_rbf < 2:
            raise ValueError(f"GaussianRBF: num_rbf must be >= 2 to define a spacing, got {num_rbf}")
        if not cutoff > start:
            raise ValueError(f"GaussianRBF: cutoff ({cutoff}) must exceed start ({start})")
        self.num_rbf = int(num_rbf)
        mu = torch.linspace(float(start), float(cutoff), self.num_rbf)
        spacing = (float(cutoff) - float(start)) / (self.num_rbf - 1)
        # Buffers, not plain attributes: they follow .to(device/dtype) and live in the state_dict.
        self.register_buffer("mu", mu)  # [K] Angstrom
        self.register_buffer("gamma", torch.tensor(0.5 / spacing**2))  # [] 1/Angstrom^2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """Expand distances ``d`` [E] (Angstrom) into [E, num_rbf]."""
        diff = d.unsqueeze(-1) - self.mu.to(d.dtype)  # [E, K]
        return torch.exp(-self.gamma.to(d.dtype) * diff.square())

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_rbf={self.num_rbf}, "
            f"start={float(self.mu[0]):g}, cutoff={float(self.mu[-1]):g})"
        )


class BesselRBF(torch.nn.Module):
    r"""Sine (zeroth-order spherical Bessel) radial basis, as in PaiNN (Schuett et al., ICML 2021).

    .. math::
        e_n(d) = \frac{\sin(n \pi d / r_c)}{d}, \qquad n = 1, \dots, K

    Every function vanishes at :math:`r_c`; smoothness of the derivative there comes from
    :class:`CosineCutoff`.

    Args:
        num_rbf: number of functions :math:`K`.
        cutoff: :math:`r_c` in Angstrom.

    Shapes:
        - **input:** distances :math:`(|\mathcal{E}|)` in Angstrom, all positive
        - **output:** :math:`(|\mathcal{E}|, K)` in 1/Angstrom
    """

    def __init__(self, num_rbf: int, cutoff: float) -> None:
        super().__init__()
        if num_rbf < 1 or not cutoff > 0:
            raise ValueError(f"BesselRBF: expected num_rbf >= 1 and cutoff > 0, found {num_rbf}, {cutoff}")
        self.num_rbf = int(num_rbf)
        self.register_buffer("freq", torch.arange(1, self.num_rbf + 1) * (math.pi / float(cutoff)))  # [K] 1/A

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """Expand distances ``d`` [E] (Angstrom) into [E, num_rbf]; finite at d = 0 (the training grid's first point)."""
        freq = self.freq.to(d.dtype)
        return freq * torch.sinc(d.unsqueeze(-1) * freq / math.pi)  # sin(f d) / d, = f at d = 0

    def __repr__(self) -> str:
        cutoff = math.pi / float(self.freq[0])
        return f"{self.__class__.__name__}(num_rbf={self.num_rbf}, cutoff={cutoff:g})"


class CosineCutoff(torch.nn.Module):
    r"""Cosine envelope that switches interactions off smoothly at the cutoff.

    .. math::
        f(d) = \begin{cases} \tfrac12\left(\cos(\pi d / r_c) + 1\right) & d < r_c \\
        0 & d \ge r_c \end{cases}

    Both :math:`f` and :math:`f'` vanish at :math:`r_c` (:math:`f \approx \pi^2 (r_c - d)^2
    / 4 r_c^2` just inside), so energy and forces are continuous when a neighbour enters or
    leaves the list; :math:`f''` jumps, which is harmless for MD with a normal time step.

    Args:
        cutoff: :math:`r_c` in Angstrom.

    Shapes:
        - **input:** distances :math:`(|\mathcal{E}|)` in Angstrom
        - **output:** :math:`(|\mathcal{E}|)` in [0, 1]
    """

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        if not cutoff > 0:
            raise ValueError(f"CosineCutoff: cutoff must be positive, got {cutoff}")
        self.register_buffer("cutoff", torch.tensor(float(cutoff)))  # [] Angstrom

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        rc = self.cutoff.to(d.dtype)
        value = 0.5 * (torch.cos(d * (math.pi / rc)) + 1.0)
        # where(), not a multiplication by a mask: beyond rc the result is exactly 0.
        return torch.where(d < rc, value, torch.zeros_like(value))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(cutoff={float(self.cutoff):g})"
