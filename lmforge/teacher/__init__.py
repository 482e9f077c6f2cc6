"""OpenAI-compatible teacher: a client with concurrency, rate limits, retries and an answer cache
(client.py, cache.py), and the `generate distill` / `generate qa` dataset builders on top of it
(generate.py, with store.py keeping their output exact across kills and reruns; args.py the flags).
"""

from lmforge.teacher.client import TeacherClient, TeacherConfig, TeacherResult, TeacherStats

__all__ = ["TeacherClient", "TeacherConfig", "TeacherResult", "TeacherStats"]
