"""The one decode loop: every token lmforge generates (chat, infer, eval, the web UI, serve and PPO /
SPO rollouts) is chosen here.

loop.py      `Job` (one sequence and where its events go) and `Decoder` (prefill, step, finish rows)
batch.py     rows decoding together over one left-padded KV cache (join, step, leave; M-RoPE)
sampling.py  per-row temperature / top-k / top-p / penalties / seeded RNG; log-prob entries
text.py      `RowText`: tokens → text pieces, cut at stop strings

It sits below infer/, serve/ and rl/ (layer 2, beside models/), so none of them has its own loop.
GRPO generates through TRL's GRPOTrainer (transformers `generate` or vLLM), which lmforge configures
but does not reimplement.
"""
