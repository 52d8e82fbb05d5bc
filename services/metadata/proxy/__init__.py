"""The pull-through cache in the metadata plane (README "Pull-through cache").

- Manifests: `ProxyManifests.get_manifest` stands in front of `MetadataCore.get_manifest` for
  repositories an upstream serves: by digest, fetched once and kept (content addressed, so
  immutable); by tag, served while younger than the upstream's `revalidate_seconds`, then
  revalidated (HEAD, digest compared) and refreshed when it moved; upstream failing, served stale
  with a warning up to `max_staleness_seconds`. Cached manifests are stored without the
  "every reference is linked" check: their blobs and children are fetched when asked for.
- Blobs: `ProxyBlobs` decides, for a blob a repository lacks, whether it is linked already, or
  which upstream to fetch it from, under a lease row (`proxy_fetch_leases`) that lets one
  caller across all replicas fetch a blob while the others wait. The bytes themselves are the
  blob plane's (FetchService); the gateway only passes the lease between the two.
- Writes into a proxied prefix are refused (UNSUPPORTED, 405) by the metadata plane (manifests,
  mounts) and the blob plane (uploads).
"""
