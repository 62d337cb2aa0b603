"""`cxrlm serve`: an OpenAI-compatible HTTP API, task endpoints in the project schema, and a web viewer.

app.py (routes), worker.py (one model, one thread, a bounded queue), storage.py (studies, sessions, results,
append-only audit log), security.py (API keys, rate limits), openai_format.py (request parsing, response and
chunk shapes), web/ (static viewer). Nothing outside cxrlm.cli imports this package; FastAPI is imported lazily.
"""
