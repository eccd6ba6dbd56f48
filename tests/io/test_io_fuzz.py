"""Property-based fuzzing of both readers: a mutated valid file either reads back the same numbers
or raises InputError naming the file, never another exception.

Derandomised (a fixed sequence of examples), a bounded number of examples, seconds in all.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbcgnn.errors import InputError
from pbcgnn.io import read_frames, write_frames

FUZZ = settings(max_examples=120, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
#: Pieces a careless edit, a bad export or another code's conventions put into a data file.
PIECES = ["0", "7", ".", "-", "+", "e", "E", "d", "_", "\u0661", "nan", "inf", " ", "\t", "\n", "=", '"',
          "X", "HO", "o", "\ufeff", "\x00", "\xff", "begin", "end", "atom", "lattice", "energy", "1_000", ","]
SOURCES = ["valid.data", "valid.xyz"]


def _numbers(frames) -> list[np.ndarray]:
    out = []
    for a in frames:
        results = a.calc.results if a.calc is not None else {}
        out += [a.numbers, a.positions, a.cell.array, a.pbc,
                np.atleast_1d(results.get("energy", np.nan)), np.asarray(results.get("forces", np.zeros(0)))]
    return out


def _assert_same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(_numbers(a), _numbers(b)):
        np.testing.assert_array_equal(x, y)


def _read_or_input_error(path):
    """The frames, or None after checking the InputError names ``path``; anything else fails."""
    try:
        return read_frames(path)
    except InputError as err:
        assert err.path == str(path), err
        assert str(err).startswith(str(path)), err
        return None


@st.composite
def mutations(draw, text: str) -> bytes:
    """``text`` with 1-3 random edits: insert a piece, delete a span, or replace a span by a piece."""
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(PIECES))
        if kind == "insert":
            text = text[:i] + piece + text[i:]
        else:
            j = min(len(text), i + draw(st.integers(1, 6)))
            text = text[:i] + (piece if kind == "replace" else "") + text[j:]
    return text.encode("utf-8", errors="surrogateescape")


@pytest.mark.parametrize("name", SOURCES)
def test_mutated_file_reads_consistently_or_raises_input_error(files, tmp_path, name):
    text = (files / name).read_text(encoding="utf-8")
    path = tmp_path / name

    @FUZZ
    @given(data=mutations(text))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        frames = _read_or_input_error(path)
        if frames is None:
            return
        # whatever was read is a valid set of frames: it writes and reads back bit for bit
        again = tmp_path / f"again_{name}"
        write_frames(again, frames)
        _assert_same(read_frames(again), frames)

    check()


@st.composite
def harmless_edits(draw, text: str) -> str:
    """Edits that change no number: a leading BOM, extra blanks between tokens, trailing blanks."""
    lines = text.split("\n")
    for k in sorted(set(draw(st.lists(st.integers(0, len(lines) - 1), max_size=6)))):
        pad = draw(st.sampled_from([" ", "  ", "\t", " \t "]))
        tokens = lines[k].split(" ")
        at = draw(st.integers(1, max(1, len(tokens) - 1)))
        lines[k] = " ".join(tokens[:at]) + (pad if len(tokens) > 1 else "") + " ".join(tokens[at:]) + \
            draw(st.sampled_from(["", " ", "\t"]))
    return ("\ufeff" if draw(st.booleans()) else "") + "\n".join(lines)


@pytest.mark.parametrize("name", SOURCES)
def test_harmless_edits_read_identical_numbers(files, tmp_path, name):
    original = read_frames(files / name)
    text = (files / name).read_text(encoding="utf-8")
    path = tmp_path / name

    @FUZZ
    @given(edited=harmless_edits(text))
    def check(edited: str) -> None:
        path.write_text(edited, encoding="utf-8")
        _assert_same(read_frames(path), original)

    check()
