"""Reading a teacher's reply and judging it: parsing, the answer checks, grounding against the image's objects.
Imports source and below; audit and report, which read whole folders, live in datagen.data."""
