"""Postgres through asyncpg: the pool, migrations, repositories and the embedded server.

Imports nothing from the rest of the project.
"""
