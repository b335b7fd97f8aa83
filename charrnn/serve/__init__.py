"""`charrnn serve`: a model behind an HTTP API (OpenAI-style completions) and a web page.

An optional part: it needs ``pip install 'charrnn[serve]'`` (starlette, uvicorn); nothing
else in the package imports it.
"""
