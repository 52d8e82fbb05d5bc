"""`python -m services.blob`: run one blob-service process (see services.blob.main)."""

import sys

from services.blob.main import main

if __name__ == "__main__":
    sys.exit(main())
