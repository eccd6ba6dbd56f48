"""predict() over a DataLoader with workers: batches arrive in shared memory, one file descriptor
per storage, and keeping them would exhaust the descriptor limit on a long validation pass."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "data" / "n2p2_h2o_rpbe_d3" / "input.data"

# 16 frames, one per batch, under a limit of 128 descriptors: keeping every batch's shared storages
# (about ten per batch) runs out of descriptors ("received 0 items of ancdata"); cloning does not.
SCRIPT = f"""
import resource
from torch_geometric.loader import DataLoader
from pbcgnn.dataset import FrameDataset
from pbcgnn.evaluation.predict import predict
from pbcgnn.model import SchNet
data = FrameDataset({str(DATA)!r}, 3.0)
model = SchNet(hidden_channels=8, num_filters=8, num_interactions=1, num_rbf=6, cutoff=3.0).double()
loader = DataLoader(data, batch_size=1, num_workers=1, timeout=60)
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
pred = predict(model, loader)
reference = predict(model, DataLoader(data, batch_size=1))
assert (pred.energy == reference.energy).all() and (pred.forces == reference.forces).all()
print("frames", len(pred.energy))
"""


def test_predict_with_a_worker_keeps_no_shared_memory(tmp_path):
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["frames", "16"]
