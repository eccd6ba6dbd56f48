"""``python -m pbcgnn.cli``: the same as the ``pbcgnn`` command (e.g. under ``torchrun -m``)."""
from . import main

main()
