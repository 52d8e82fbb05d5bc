"""The metadata store seam: `MetadataStore` (base.py) and its SQL implementation (sql.py)."""
