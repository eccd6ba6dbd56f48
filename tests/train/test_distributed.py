"""DistributedDataParallel under torchrun (gloo, CPU): same global batch -> same weights as one process."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pbcgnn.checkpoint import read_checkpoint

# Mixed frame sizes (48-192 atoms): the loss must be normalised over the global batch, not per process.
ARGS = ["train", "--epochs", "2", "--batch-size", "4", "--val-fraction", "0.25", "--features", "16",
        "--filters", "16", "--interactions", "2", "--rbf", "12", "--cutoff", "4.5", "--dtype", "float64",
        "--seed", "5", "--device", "cpu", "--no-progress"]


def run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_processes_match_one(bundled_n2p2, tmp_path):
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_gloo_available():
        pytest.skip("gloo backend not available")
    run([sys.executable, "-m", "pbcgnn.cli", *ARGS, str(bundled_n2p2), "--out", str(tmp_path / "one")])
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "pbcgnn.cli", *ARGS, str(bundled_n2p2), "--out", str(tmp_path / "two")])
    one = read_checkpoint(tmp_path / "one" / "last.pt")
    two = read_checkpoint(tmp_path / "two" / "last.pt")
    assert one["epoch"] == two["epoch"] == 2
    weights_one, weights_two = one["train_state"]["model"], two["train_state"]["model"]
    assert float(weights_one["lin2.weight"].abs().sum()) > 0  # training moved the zero-initialised readout
    for key, w in weights_one.items():
        torch.testing.assert_close(weights_two[key], w, rtol=1e-9, atol=1e-11, msg=key)
    # rank 0 alone writes: one set of TensorBoard events, no stray temporary files
    assert len(list((tmp_path / "two").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (tmp_path / "two").glob("*.pt")) == ["best.pt", "last.pt"]


def test_two_processes_streaming_from_a_store_match_one_in_memory(bundled_n2p2, tmp_path):
    """Each rank reads its shard of the on-disk store (rank 0 converts it, the other waits) and
    builds its graphs in a DataLoader worker: the weights equal one process's in-memory run."""
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_gloo_available():
        pytest.skip("gloo backend not available")
    run([sys.executable, "-m", "pbcgnn.cli", *ARGS, str(bundled_n2p2), "--out", str(tmp_path / "one"),
         "--storage", "memory"])
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "pbcgnn.cli", *ARGS, str(bundled_n2p2), "--out", str(tmp_path / "two"), "--storage", "disk",
         "--workers", "1", "--cache-dir", str(tmp_path / "cache")])
    one = read_checkpoint(tmp_path / "one" / "last.pt")["train_state"]["model"]
    two = read_checkpoint(tmp_path / "two" / "last.pt")["train_state"]["model"]
    for key, w in one.items():
        torch.testing.assert_close(two[key], w, rtol=1e-9, atol=1e-11, msg=key)
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()] == ["store"]  # one store, no leftovers
