"""The help panels of the command line's flags, in the order `--help` shows them: a light module, read by the
settings tree (datagen/run/options.py) and by flags declared by hand (datagen/cli.py) without loading the tree."""

INPUT, TEACHER, SAMPLING, LIMITS, OUTPUT, VISION, ENGINES = (
    "Input", "Teacher", "Sampling", "Throughput and limits", "Output", "Vision", "Engines",
)
PANELS = (INPUT, TEACHER, SAMPLING, LIMITS, OUTPUT, VISION, ENGINES)
