"""Evaluation refuses frames a model cannot know, with the calculator's own check (one function)."""
from __future__ import annotations

import pytest

from pbcgnn import calculator
from pbcgnn.dataset import FrameDataset
from pbcgnn.errors import InputError
from pbcgnn.io.checks import check_supported


def test_calculator_and_evaluation_share_the_check():
    assert calculator.check_supported is check_supported


def test_unknown_element_names_file_and_frame(files, tmp_path):
    path = tmp_path / "carbon.xyz"
    path.write_text((files / "valid.xyz").read_text().replace("\nO ", "\nC "))
    with pytest.raises(InputError) as info:
        FrameDataset(path, 3.0, elements=[1, 8], periodic=True)
    assert str(info.value) == (f"{path.resolve()}: frame 0: element(s) C not in the model's training set; "
                               "expected only H, O")


def test_frame_without_a_cell_for_a_periodic_model(files):
    with pytest.raises(InputError, match=r"nonperiodic\.xyz: frame 0: the model was trained on periodic frames"):
        FrameDataset(files / "nonperiodic.xyz", 3.0, elements=[1, 8], periodic=True)
    assert len(FrameDataset(files / "nonperiodic.xyz", 3.0, elements=[1, 8], periodic=False)) == 1


def test_n2p2_frames_are_located_by_line(files, tmp_path):
    with pytest.raises(InputError) as info:
        FrameDataset(files / "valid.data", 3.0, elements=[8], periodic=False)
    assert (info.value.line, info.value.frame) == (1, None) and "element(s) H" in str(info.value)
