"""Tuners: what is trained (full, freeze, PEFT adapters, LLaMA-Pro) and how (GaLore, APOLLO, BAdam, LoRA+)."""
