"""The public API: every re-exported name resolves, and importing pbcgnn does not load torch."""
from __future__ import annotations

import subprocess
import sys

import pbcgnn


def test_every_public_name_resolves():
    for name in pbcgnn.__all__:
        assert getattr(pbcgnn, name) is not None, name


def test_import_is_light():
    code = "import sys, pbcgnn; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_is_light():
    """`pbcgnn --help` loads no torch: commands import it inside their bodies."""
    code = "import sys, pbcgnn.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
