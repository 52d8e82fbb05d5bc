"""Contract suites: one per seam, run unchanged against every implementation."""
