"""COCO captions and boxes, read and indexed, and the context text a teacher is shown for one image.
Imports errors, files and formats only."""
