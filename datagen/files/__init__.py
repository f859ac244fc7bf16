"""Files that survive a kill: append-only JSONL, atomic JSON writes, the folder lock, disk failures as one line.
Imports only datagen.errors; everything above may use it."""
