"""Serving: the BentoML service (`service.py`, the module the bento points to) and its parts.

Only `service.py` reads the bento's arguments and loads a model at import; every other module here
is plain code, importable and testable without a bento. Nothing is imported here: importing
`serving.guard` or `serving.arrow` must not start a service.
"""
