"""Companion trainer: LLaVA's two stages on the records datagen exports.
Imports errors and formats only, so it can be lifted out with them.

Heavy imports (torch, transformers) live in the submodules; importing this package is free so
the generation CLI stays fast.
"""
