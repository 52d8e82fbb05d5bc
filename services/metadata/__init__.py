"""The metadata plane: repositories, manifests, tags, referrers and blob-to-repository links."""
