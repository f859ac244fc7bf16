"""Passes over items, resumable: the job core (job.py), and one generate run as a job of its parts (options, the
plan, one item's request, record and handling, the tally, the output folder), OpenAI Batch and requests-file
hand-off, estimates, progress. Imports teachers and below; nothing below imports it."""
