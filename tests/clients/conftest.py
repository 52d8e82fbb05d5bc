"""Real clients run against the same parametrized registry fixture as the HTTP tests."""

from tests.integration.conftest import client, profile, registry, repo  # noqa: F401 - pytest fixtures
