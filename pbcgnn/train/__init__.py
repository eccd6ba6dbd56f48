"""Training: options (config), loss, the fit loop and checkpoints.

Import the submodules directly (``pbcgnn.train.loop.fit``); this package imports nothing
heavy so the CLI stays fast.
"""
