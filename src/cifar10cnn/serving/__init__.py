"""Serving: the HTTP service (FastAPI), its dynamic batcher, and the web page."""
