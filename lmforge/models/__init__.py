"""Models: presets and from-scratch init (native transformers architectures), loading any HF or
run folder, the tokenizer, tuners, MiniMind import."""
