"""The Label Studio side of the loop: client, project state, Celery worker tasks, local server.

Imports the core engine; never imported by it.
"""
