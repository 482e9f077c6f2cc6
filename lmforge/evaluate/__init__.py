"""`lmforge eval`: perplexity, multiple-choice benchmarks, generation metrics, OpenAI endpoints.

args.py (the flags), ppl.py (loss, perplexity, bits per byte over text), bench.py (C-Eval /
CMMLU / MMLU folder layouts → questions), mc.py (prompts and answer-letter likelihood scoring),
metrics.py (ROUGE-L, BLEU-4, exact match, hand-written), gen.py (generate on a val set and score),
endpoint.py (the same tasks against an OpenAI-compatible server), run.py (the command, results
JSON and printed table). Sample benchmark folders ship in `lmforge/assets/bench_samples/`.
"""
