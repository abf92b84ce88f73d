"""The data stage's pipeline: runs inside the `data` runtime as `python -m datapipe ...`.

Standalone worker code: stdlib plus the data runtime's packages, never `internlm_chain` (the
glue in `stages/data` imports only `spec`, which is stdlib-only, to validate chain files).
"""
