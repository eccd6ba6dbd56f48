"""Every broken input raises InputError naming the file and the exact line (n2p2) or frame."""
from __future__ import annotations

import pytest

from pbcgnn.errors import InputError
from pbcgnn.io import read_frames, validate_frames

# file in tests/files -> (location after the path, words the message must contain)
BROKEN = {
    "truncated_frame.data": (":18:", "frame starting at line 12 is truncated"),
    "missing_end.data": (":11:", "expected 'end' of the frame starting at line 1, found 'begin'"),
    "wrong_columns.data": (":7:", "expected 10 columns"),
    "mixed_columns.data": (":8:", "expected 10 columns like the first atom line"),
    "lattice_wrong_columns.data": (":4:", "expected 4 columns (lattice ax ay az), found 3"),
    "two_lattice_lines.data": (":5:", "expected 3 lattice lines starting at line 3, found 2"),
    "four_lattice_lines.data": (":6:", "found a 4th"),
    "lattice_after_atoms.data": (":6:", "expected lattice lines before the first atom line"),
    "bad_number.data": (":6:", "expected a number for y (column 3), found '1.0.0'"),
    "fortran_exponent.data": (":9:", "expected a number for energy, found '-7.64d+01'"),
    "nan_energy.data": (":9:", "expected a finite number for energy, found 'NaN'"),
    "inf_force.data": (":7:", "expected a finite number for fy"),
    "nan_position.data": (":8:", "expected a finite number for y"),
    "nan_lattice.data": (":4:", "expected a finite number for lattice y"),
    "inf_atom_charge.data": (":6:", "expected a finite number for charge (column 6)"),
    "nan_total_charge.data": (":10:", "expected a finite number for charge"),
    "unknown_element.data": (":7:", "expected a chemical element symbol in column 5, found 'Xx'"),
    "dummy_element.data": (":7:", "found 'X'"),
    "singular_cell.data": (":3:", "singular cell"),
    "zero_volume_cell.data": (":3:", "singular cell"),
    "empty.data": (": ", "no frames found"),
    "blank_lines_only.data": (": ", "no frames found"),
    "no_atoms.data": (":8:", "expected at least one atom line"),
    "missing_energy.data": (":10:", "expected an 'energy' line in the frame starting at line 1"),
    "duplicate_energy.data": (":10:", "found a second (first at line 9)"),
    "duplicate_charge.data": (":11:", "found a second (first at line 10)"),
    "unknown_keyword.data": (":9:", "found 'force'"),
    "text_outside_frame.data": (":12:", "expected 'begin', found 'energy'"),
    "end_without_begin.data": (":1:", "expected 'begin', found 'comment'"),
    "begin_with_arguments.data": (":1:", "expected 'begin' alone on its line"),
    "not_utf8.data": (":2:", "expected UTF-8 text"),
    "nan_position.xyz": (": frame 1:", "expected finite positions, found nan at atom 1"),
    "inf_force.xyz": (": frame 1:", "expected finite forces, found inf at atom 2"),
    "nan_energy.xyz": (": frame 1:", "expected a finite energy, found nan"),
    "unknown_element.xyz": (":9: frame 1:", "expected a chemical element symbol in column 1, found 'Xx'"),
    "dummy_element.xyz": (":9: frame 1:", "expected a chemical element symbol in column 1, found 'X'"),
    "bad_number.xyz": (": frame 1:", "1.0.0"),
    "wrong_columns.xyz": (":8: frame 1:", "expected 7 columns (species, pos (3), forces (3)), found 6"),
    "count_too_small.xyz": (":5: frame 1:", "does the atom count of frame 0 match"),
    "count_too_large.xyz": (":6: frame 0:", "expected 4 atom lines after the count at line 1"),
    "count_too_large_last_frame.xyz": (":10: frame 1:", "found 3 followed by end of file"),
    "blank_line_between_frames.xyz": (":6: frame 1:", "found a blank line followed by more data"),
    "missing_energy.xyz": (": frame 1:", "expected an energy"),
    "singular_cell.xyz": (": frame 0:", "singular cell"),
    "no_atoms.xyz": (": frame 0:", "expected at least one atom, found none"),
    "empty.xyz": (": ", "no frames found"),
    "underscore_number.xyz": (":8: frame 1:", "expected a number for pos (column 2), found '1_000.0'"),
    "nonascii_digit.xyz": (":9: frame 1:", "expected a number for pos (column 2), found '\u0661.95'"),
    "uppercase_symbol.xyz": (":9: frame 1:", "expected a chemical element symbol in column 1, found 'HO'"),
    "extra_column.xyz": (":10: frame 1:", "expected 7 columns (species, pos (3), forces (3)), found 8"),
    "underscore_energy.xyz": (":6: frame 1:", "expected a number for energy, found '-2_078.5'"),
    "bad_weight.xyz": (": frame 1:", "expected a finite non-negative weight, found 'heavy'"),
    "nan_weight.xyz": (": frame 1:", "expected a finite non-negative weight, found nan"),
    "negative_weight.xyz": (": frame 1:", "expected a finite non-negative weight, found -1.0"),
    "nan_lattice.xyz": (": frame 0:", "expected finite cell, found nan in lattice vector 0"),
    "not_gzip.data.gz": (": ", "expected a .gz compressed file, found unreadable data"),
}
VALID = {"valid.data", "energy_only.data", "valid.xyz", "no_forces.xyz", "info_labels.xyz",
         "nonperiodic.xyz", "bom.data", "bom.xyz", "valid.data.gz", "valid.xyz.gz", "ref_labels.xyz",
         "overlapping_atoms.xyz"}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_file(files, name):
    where, words = BROKEN[name]
    path = files / name
    with pytest.raises(InputError) as info:
        read_frames(path)
    message = str(info.value)
    assert message.startswith(f"{path}{where}"), message
    assert words in message
    assert info.value.path == str(path)


def test_every_file_is_classified(files):
    on_disk = {p.name for p in files.iterdir() if p.name != "README.md"}
    assert on_disk == set(BROKEN) | VALID
    readme = (files / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in on_disk)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_files_read(files, name):
    assert read_frames(files / name)


def test_line_attribute(files):
    with pytest.raises(InputError) as info:
        read_frames(files / "missing_end.data")
    assert (info.value.line, info.value.frame) == (11, None)
    with pytest.raises(InputError) as info:
        read_frames(files / "nan_position.xyz")
    assert (info.value.line, info.value.frame) == (None, 1)


@pytest.mark.parametrize("suffix", [".data", ".xyz"])
def test_missing_file(tmp_path, suffix):
    path = tmp_path / f"nope{suffix}"
    with pytest.raises(InputError, match="no such file") as info:
        read_frames(path)
    assert str(info.value) == f"{path}: no such file"


def test_directory(tmp_path):
    with pytest.raises(InputError) as info:
        read_frames(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, expected a file"


def test_unknown_ase_format(files):
    with pytest.raises(InputError, match="expected an ase.io format name, found 'nosuch'"):
        read_frames(files / "valid.xyz", format="nosuch")


def test_unknown_unit(files):
    with pytest.raises(InputError, match="unknown length unit"):
        read_frames(files / "valid.data", length_unit="furlong")


def test_validate_frames_without_source(files):
    frames = read_frames(files / "valid.xyz")
    for atoms in frames:
        for key in ("source", "source_path", "source_frame"):
            del atoms.info[key]
    frames[1].positions[0, 0] = float("nan")
    with pytest.raises(InputError) as info:
        validate_frames(frames, "made-up.xyz")
    assert str(info.value).startswith("made-up.xyz: frame 1: expected finite positions")
    with pytest.raises(InputError, match="made-up.xyz: no frames found"):
        validate_frames([], "made-up.xyz")


def test_writer_rejects_partly_periodic(files, tmp_path):
    from pbcgnn.io.n2p2 import write_n2p2

    frames = read_frames(files / "valid.data")
    frames[1].pbc = [True, True, False]
    with pytest.raises(InputError) as info:
        write_n2p2(tmp_path / "out.data", frames)
    expected = f"{tmp_path / 'out.data'}: frame 1: expected a fully periodic"
    assert str(info.value).startswith(expected)
