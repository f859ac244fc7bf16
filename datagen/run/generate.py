"""`datagen generate`: where the replies come from (live, the Batch API, a results file), then the pipeline over them.

The pipeline (datagen/run/pipeline.py) knows none of these: each source puts replies into the response cache or
answers live beneath it, and `execute` turns them into records the same way.
"""

from __future__ import annotations

from datagen.run.batch import generate_batch
from datagen.files.lock import lock_folder
from datagen.run.handoff import ingest_results
from datagen.formats.manifest import Manifest
from datagen.run.options import GenerateOptions
from datagen.run.pipeline import Run, execute


def generate(options: GenerateOptions) -> Manifest:
    with lock_folder(options.out, "generate"):  # a second generate into the same --out is refused at once
        if options.batch:
            return generate_batch(options)
        if options.results_in is not None:
            return ingest_results(options)
        if options.ray is not None:
            from datagen.run.ray_engine import generate_with_ray

            return generate_with_ray(options)
        return execute(Run(options))
