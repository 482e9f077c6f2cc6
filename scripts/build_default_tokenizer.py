"""Rebuild the tokenizer shipped in lmforge/assets/tokenizer (reproducible: same files every run).

Generates the synthetic corpora at seed 0, scale 1.0 in a temporary folder and trains a 6400-token
byte-level BPE on ``tokenizer_corpus.txt``. Usage: ``python scripts/build_default_tokenizer.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from lmforge.data.synth import synth  # noqa: E402
from lmforge.models.tokenizer import default_tokenizer_dir, train_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=default_tokenizer_dir())
    parser.add_argument("--vocab_size", type=int, default=6400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = synth(tmp, seed=0, scale=1.0)
        train_tokenizer([paths["tokenizer_corpus"]], args.out_dir, vocab_size=args.vocab_size)
    print(f"wrote {args.out_dir}")


if __name__ == "__main__":
    main()
