"""The freeze spec: groups, block ranges, and errors for everything else."""
from __future__ import annotations

import pytest
import torch

from pbcgnn.config import parse_freeze
from pbcgnn.errors import InputError
from pbcgnn.model import SchNet
from pbcgnn.train.transfer import freeze_parameters


@pytest.mark.parametrize("spec, groups", [
    ("", {}),
    ((), {}),
    ("embedding", {"embedding": None}),
    ("embedding,interactions:0-2,readout", {"embedding": None, "interactions": [0, 1, 2], "readout": None}),
    (("interactions:1", " interactions:3 "), {"interactions": [1, 3]}),
    ("interactions:2,interactions", {"interactions": None}),  # the whole group wins
    ("interactions, interactions:0", {"interactions": None}),
])
def test_parse_freeze(spec, groups):
    assert parse_freeze(spec, num_interactions=4) == groups


@pytest.mark.parametrize("spec, message", [
    ("embeding", "found 'embeding'"),
    ("embedding,,readout", "found ''"),
    ("readout:0", "found 'readout:0'"),
    ("interactions:a", "integers"),
    ("interactions:2-1", "0 <= I <= J"),
    ("interactions:-1", "integers|0 <= I"),
    ("interactions:1-4", "blocks 0-3"),
])
def test_bad_freeze_specs_are_input_errors(spec, message):
    with pytest.raises(InputError, match=message):
        parse_freeze(spec, num_interactions=4)


def test_freeze_parameters_marks_exactly_the_groups():
    model = SchNet(hidden_channels=8, num_filters=8, num_interactions=3, num_rbf=6, cutoff=4.0)
    frozen = freeze_parameters(model, "embedding,interactions:1-2")
    for name, p in model.named_parameters():
        expect_frozen = name.startswith(("embedding.", "interactions.1.", "interactions.2."))
        assert (name in frozen) == expect_frozen == (not p.requires_grad), name
    assert any(n.startswith("interactions.0.") for n, p in model.named_parameters() if p.requires_grad)
    assert freeze_parameters(SchNet(hidden_channels=8, num_filters=8, num_interactions=1), "readout") == [
        "lin1.weight", "lin1.bias", "lin2.weight", "lin2.bias"]
    assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())
