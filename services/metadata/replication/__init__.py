"""Push-based replication (README "Replication"): content pushed here is copied to other registries.

Each `[[replication.rules]]` entry becomes an event endpoint of its own (`replicate-<name>`), so
the durable event outbox records every manifest push (and, with `deletes`, every manifest delete)
for it in the transaction of the change, and the delivery worker's claims, retries with backoff,
dead-lettering and `lading events list|replay` apply unchanged. Only the delivery differs: instead
of POSTing the events, `Replicator.deliver` copies what they name to the target registry:
children and blobs first (HEAD first: what the target has is not sent again), then the manifest
exactly as stored (same bytes, same digest), under its tag or by digest. Copies are idempotent, so
a batch retried after a crash or a failure copies nothing twice.
"""
