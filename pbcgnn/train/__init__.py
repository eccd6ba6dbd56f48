"""Training: the loss, the typed training state, set-up, the epoch loop, fine-tuning, committees.

:func:`pbcgnn.train.run.fit` is the entry point (re-exported as :func:`pbcgnn.fit`). This package
imports nothing itself, so ``pbcgnn --help`` stays fast.
"""
