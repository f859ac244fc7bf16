"""Scoring trained models: LLaVA-Bench-style answers (`bench`) and ScienceQA accuracy (`scienceqa`).
Imports train, files and below.

torch and transformers are imported inside the functions that run a model, so the file formats and the
arithmetic here load without the [train] extra.
"""
