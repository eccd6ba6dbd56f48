"""Radial basis and cutoff envelope: shapes, peaks, decay, and the cutoff's value and slope."""
from __future__ import annotations

import math

import pytest
import torch

from pbcgnn.model import CosineCutoff, GaussianRBF


def test_gaussian_rbf_peaks_at_centres_and_decays():
    rbf = GaussianRBF(num_rbf=20, cutoff=6.0).double()
    mu = torch.linspace(0.0, 6.0, 20, dtype=torch.float64)
    torch.testing.assert_close(rbf.mu, mu)
    torch.testing.assert_close(rbf.gamma, torch.tensor(0.5 / (6.0 / 19) ** 2, dtype=torch.float64))
    values = rbf(mu)  # [20, 20]: row k evaluated at centre k
    assert values.shape == (20, 20)
    torch.testing.assert_close(values.diagonal(), torch.ones(20, dtype=torch.float64))
    assert bool((values <= 1.0).all())  # a positive exponent would give values > 1 ...
    far = rbf(torch.tensor([16.0, 100.0], dtype=torch.float64))
    assert float(far.max()) < 1e-30  # ... and blow up far away instead of decaying


def test_gaussian_rbf_start_and_width():
    rbf = GaussianRBF(num_rbf=5, cutoff=5.0, start=1.0).double()
    torch.testing.assert_close(rbf.mu, torch.linspace(1.0, 5.0, 5, dtype=torch.float64))
    # One spacing (1 A) from a centre the Gaussian is exp(-1/2).
    value = rbf(torch.tensor([2.0], dtype=torch.float64))[0, 0]
    assert math.isclose(float(value), math.exp(-0.5), rel_tol=1e-12)


def test_gaussian_rbf_rejects_one_gaussian():
    with pytest.raises(ValueError, match="GaussianRBF"):
        GaussianRBF(num_rbf=1, cutoff=6.0)


def test_rbf_buffers_follow_dtype_and_state_dict():
    rbf = GaussianRBF(num_rbf=8, cutoff=6.0)
    assert set(rbf.state_dict()) == {"mu", "gamma"}
    assert rbf.double().mu.dtype == torch.float64
    assert set(CosineCutoff(6.0).state_dict()) == {"cutoff"}


def test_cosine_cutoff_values():
    cut = CosineCutoff(6.0).double()
    d = torch.tensor([0.0, 3.0, 6.0, 6.0 + 1e-12, 7.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(cut(d), torch.tensor([1.0, 0.5, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    assert bool((cut(d[2:]) == 0).all())  # exactly zero at and beyond rc


def test_cosine_cutoff_slope_vanishes_at_cutoff():
    cut = CosineCutoff(6.0).double()
    d = torch.tensor([6.0 - 1e-6, 6.0, 6.5], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(cut(d).sum(), d)
    # f'(rc - delta) ~ -(pi / rc)^2 delta / 2: first order in delta, and exactly 0 from rc on.
    assert abs(float(grad[0])) < 1e-6
    assert float(grad[1]) == 0.0 and float(grad[2]) == 0.0
