"""`python -m services.metadata`: run the metadata service (settings from LADING_* variables)."""

import sys

from services.metadata.main import main

sys.exit(main())
