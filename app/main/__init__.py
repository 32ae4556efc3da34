"""The composition root: the only package that sees every layer.

settings.py (the environment, read once), ioc.py (the Dishka providers, one per layer),
services.py (the background services, in the order they start), startup.py (a worker's
start-up), asgi.py (create_app), cli.py (`python -m app`) and embedded.py (PostgreSQL and
Redis for `make run`).
"""
