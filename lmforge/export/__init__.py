"""`lmforge export`: a trained model (run folder, checkpoint, HF folder, or an adapter merged into
its base) written for deployment.

args.py (the flags), source.py (find and load the model, merging adapters with `tuners.merge`),
hf.py (merged safetensors + tokenizer + chat template + generation config), gguf_file.py (GGUF
f16 / q8_0 through the `gguf` package), ollama.py (the Ollama `Modelfile` with the chat template in
Go-template syntax), quant.py (GPTQ / AWQ / bitsandbytes behind the `[gpu]` extra), hub.py
(`--push_to_hub`), run.py (the command: checks, atomic output folder, dispatch by format).
"""
