"""Both readers agree on text, numbers and symbols; compressed files go through pbcgnn's readers;
label columns can be named and unread look-alike columns are warned about."""
from __future__ import annotations

import bz2
import gzip
import logging
import lzma

import numpy as np
import pytest

from pbcgnn.errors import InputError
from pbcgnn.io import detect_format, read_frames
from pbcgnn.io.tokens import is_symbol, parse_number

COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.positions, y.positions)
        np.testing.assert_array_equal(x.cell.array, y.cell.array)
        assert x.get_potential_energy() == y.get_potential_energy()
        np.testing.assert_array_equal(x.get_forces(), y.get_forces())


@pytest.mark.parametrize("token", ["1.0", "-7.64E+01", "1e1", "+.5", "nan", "inf"])
def test_numbers(token):
    assert parse_number(token) is not None


@pytest.mark.parametrize("token", ["1_000", "\u0661", "1.0d0", "1.0.0", "HO", ""])
def test_not_numbers(token):
    assert parse_number(token) is None


@pytest.mark.parametrize("token,ok", [("O", True), ("Ho", True), ("HO", False), ("o", False), ("X", False)])
def test_one_symbol_rule(token, ok):
    assert is_symbol(token) is ok


@pytest.mark.parametrize("number", ["1_0.0", "\u0661.0"])
@pytest.mark.parametrize("name", ["valid.data", "valid.xyz"])
def test_both_readers_reject_the_same_numbers(files, tmp_path, name, number):
    text = (files / name).read_text(encoding="utf-8").replace("1.0 1.0 1.0", f"{number} 1.0 1.0", 1)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=f"expected a number for .*found '{number}'") as info:
        read_frames(path)
    assert info.value.line is not None


@pytest.mark.parametrize("name", ["valid.data", "valid.xyz"])
def test_both_readers_reject_uppercase_symbols(files, tmp_path, name):
    text = (files / name).read_text(encoding="utf-8")
    path = tmp_path / name
    path.write_text(text.replace(" H ", " HO ", 1) if name.endswith(".data") else text.replace("\nH ", "\nHO ", 1))
    with pytest.raises(InputError, match="expected a chemical element symbol in column .*found 'HO'"):
        read_frames(path)


@pytest.mark.parametrize("name", ["bom.data", "bom.xyz"])
def test_bom_at_the_start_is_accepted_by_both(files, name):
    plain = "valid.data" if name.endswith(".data") else "valid.xyz"
    frames = read_frames(files / name)
    _same(frames, read_frames(files / plain)[: len(frames)])


@pytest.mark.parametrize("name", ["valid.data", "valid.xyz"])
def test_bom_elsewhere_is_rejected_by_both(files, tmp_path, name):
    lines = (files / name).read_text(encoding="utf-8").split("\n")
    lines[2] = "\ufeff" + lines[2]
    path = tmp_path / name
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_frames(path)
    assert info.value.line == 3


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
@pytest.mark.parametrize("name", ["valid.data", "valid.xyz"])
def test_compressed_files_read_like_plain_ones(files, tmp_path, name, suffix):
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(COMPRESS[suffix]((files / name).read_bytes()))
    assert detect_format(path) == ("n2p2" if name.endswith(".data") else "ase")
    _same(read_frames(path), read_frames(files / name))
    if name.endswith(".data"):  # units converted once, by pbcgnn (not ASE's RuNNer reader)
        _same(read_frames(path, length_unit="bohr"), read_frames(files / name, length_unit="bohr"))


def test_compressed_n2p2_by_content(files, tmp_path):
    path = tmp_path / "frames.gz"
    path.write_bytes(gzip.compress((files / "valid.data").read_bytes()))
    assert detect_format(path) == "n2p2"
    _same(read_frames(path), read_frames(files / "valid.data"))


def test_truncated_compressed_file(files, tmp_path):
    path = tmp_path / "input.data.xz"
    path.write_bytes(lzma.compress((files / "valid.data").read_bytes())[:-20])
    with pytest.raises(InputError, match=r"expected a \.xz compressed file, found unreadable data") as info:
        read_frames(path)
    assert info.value.path == str(path)


def test_ase_runner_reader_is_refused(files):
    with pytest.raises(InputError, match="expected --format n2p2"):
        from pbcgnn.io.ase_formats import read_ase

        read_ase(files / "valid.data", format="runnerdata")


def test_unread_label_columns_are_warned_about_once(files, caplog):
    with caplog.at_level(logging.WARNING, logger="pbcgnn.io"):
        (atoms,) = read_frames(files / "ref_labels.xyz")
    assert atoms.info["has_forces"] is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "REF_forces" in message and "REF_energy" in message and "--forces-key" in message
    assert "forces from nowhere" in message


def test_frames_written_by_ase_after_pbcgnn_read_them_raise_no_warning(files, tmp_path, caplog):
    """ase.io.write keeps the reader's own has_forces flag in the comment line: not a label column."""
    import ase.io

    frames = read_frames(files / "valid.xyz")
    ase.io.write(tmp_path / "copy.xyz", frames, format="extxyz")
    assert "has_forces" in (tmp_path / "copy.xyz").read_text().splitlines()[1]
    with caplog.at_level(logging.WARNING, logger="pbcgnn.io"):
        again = read_frames(tmp_path / "copy.xyz")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(again) == len(frames)


def test_named_label_columns(files, caplog):
    (atoms,) = read_frames(files / "ref_labels.xyz", energy_key="REF_energy", forces_key="REF_forces",
                           stress_key="REF_stress")
    assert atoms.get_potential_energy() == -2000.0
    np.testing.assert_array_equal(atoms.get_forces()[0], [0.1, -0.2, 0.3])
    np.testing.assert_array_equal(atoms.get_stress(), [0.01, 0.02, 0.03, 0.0, 0.0, 0.0])
    assert "REF_forces" not in atoms.arrays and "REF_energy" not in atoms.info


def test_named_column_found_nowhere(files):
    with pytest.raises(InputError, match=r"expected a column 'REF_forces' \(--forces-key\) in some frame"):
        read_frames(files / "valid.xyz", forces_key="REF_forces")


def test_label_keys_are_refused_for_n2p2(files):
    with pytest.raises(InputError, match="expected no label keys for n2p2 data"):
        read_frames(files / "valid.data", energy_key="REF_energy")
