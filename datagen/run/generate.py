"""`datagen generate`: where the replies come from (live, the Batch API, a results file), then the pipeline over them.

The pipeline (datagen/run/pipeline.py) knows none of these: each source puts replies into the response cache or
answers live beneath it, and `execute` turns them into records the same way, through the job core (run/job.py).
"""

from __future__ import annotations

from datagen.run.batch import generate_batch
from datagen.run.handoff import ingest_results
from datagen.formats.manifest import Manifest
from datagen.run.job import job_folder
from datagen.run.options import GenerateOptions
from datagen.run.pipeline import GenerateJob, execute


def generate(options: GenerateOptions) -> Manifest:
    # A second generate into the same --out is refused at once; SIGTERM ends any path as Ctrl-C does.
    with job_folder(options.out, "generate"):
        if options.batch:
            return generate_batch(options)
        if options.results_in is not None:
            return ingest_results(options)
        if options.ray is not None:
            from datagen.run.ray_engine import generate_with_ray

            return generate_with_ray(options)
        return execute(GenerateJob(options))
