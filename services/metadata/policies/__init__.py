"""Governance for platform teams (issue 16): immutable tags, tag history and restore, the audit
log. Rules live in the metadata database (tables.py), every replica reads them in the write
transaction it guards, and a refusal is a `RegistryError(DENIED)` whose message names the rule
and says what to do. Managed over gRPC (PolicyService, servicer.py) by the `lading` CLI
(services/cli_policies.py).
"""
