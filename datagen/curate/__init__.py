"""Curating a run, not only generating it: images left out (exclude) and chosen (select) before the teacher is
asked, near-duplicates (dedup) and low judge scores (judge_filter) moved to rejects after. Each step leaves the
folder a valid run and adds its account to the manifest's `curation`."""
