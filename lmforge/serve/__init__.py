"""`lmforge serve`: an OpenAI-compatible HTTP server over one model and its LoRA adapters.

args.py       the command's flags (ServeArgs) and the --adapters parser
server.py     load model + adapters, bind, run uvicorn (entry point `run_serve`)
app.py        FastAPI routes, SSE streaming, OpenAI-shaped errors
protocol.py   request schemas (pydantic) and the error type
service.py    requests → prompts, sampling settings and scheduler jobs
scheduler.py  the model thread: bounded queue, dynamic batching, per-request adapters (tokens come
              from the one decode loop, lmforge/decode/)
vllm.py       --backend vllm: exec vLLM's own server with the same model and adapters
"""
