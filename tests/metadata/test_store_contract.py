"""Runs the MetadataStore contract suite (tests/contracts/metadata_store_suite.py) on SQLite and
PostgreSQL: the suite's `dialect` fixture is parametrized over both."""

from tests.contracts.metadata_store_suite import *  # noqa: F401,F403
