"""Shared pytest plumbing: real servers are plugins under tests/servers/."""

pytest_plugins = [
    "tests.servers.seaweed",
    "tests.servers.postgres",
]
