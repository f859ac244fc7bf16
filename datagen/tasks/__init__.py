"""What is asked: prompt packs, the task registry (pack, context, reply form and file per task), token estimates.
Imports quality, source and below."""
