"""The blob plane: content-addressed bytes and resumable upload sessions over a BlobBackend."""
