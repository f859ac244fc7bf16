"""Pairwise judging of two answer sets by a judge model: inputs, the run, the mock judge, statistics.
Imports run and below; only the command line imports it."""
