"""pbcgnn train --init-from/--freeze/--keep-scale, in-process."""
from __future__ import annotations

import torch
from click.testing import CliRunner
from pbcgnn.cli import main

from pbcgnn.checkpoint import read_checkpoint


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_finetune_from_the_command_line(pretrained, shifted_file, tmp_path):
    result = invoke("train", shifted_file, "--init-from", pretrained, "--freeze", "embedding,interactions:0",
                    "--epochs", "2", "--lr", "1e-3", "--dtype", "float64", "--device", "cpu", "--no-progress",
                    "--out", tmp_path)
    assert result.exit_code == 0, result.output
    tuned, start = read_checkpoint(tmp_path / "best.pt"), read_checkpoint(pretrained)
    assert tuned["config"]["model"] == start["config"]["model"]
    assert list(tuned["config"]["transfer"]["freeze"]) == ["embedding", "interactions:0"]
    assert torch.equal(tuned["model"]["embedding.weight"], start["model"]["embedding.weight"])
    assert float(tuned["model"]["reference.e0"][8]) != float(start["model"]["reference.e0"][8])  # refitted


def test_architecture_options_conflict_with_init_from(pretrained, shifted_file, tmp_path):
    result = invoke("train", shifted_file, "--init-from", pretrained, "--cutoff", "5", "--out", tmp_path)
    assert result.exit_code == 2 and "--cutoff" in result.output and "from the checkpoint" in result.output


def test_bad_freeze_spec_is_one_line(pretrained, shifted_file, tmp_path):
    result = invoke("train", shifted_file, "--init-from", pretrained, "--freeze", "embedding,readut",
                    "--out", tmp_path, "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: ") and "'readut'" in result.output
    assert len(result.output.strip().splitlines()) == 1
