"""Shared pytest plumbing: real servers are plugins under tests/servers/; the ``alone``
marker (a test that runs while no other does under pytest-xdist) is tests/alone.py."""

pytest_plugins = [
    "tests.alone",
    "tests.servers.seaweed",
    "tests.servers.postgres",
]
