"""One generate run: options, one item's request and record, the item loop, the output folder, OpenAI Batch and requests-file hand-off, estimates, progress.
Imports teachers and below; nothing below imports it."""
