"""`python -m gateway`: the gateway plane, configured from LADING_* settings."""

from gateway.main import main

if __name__ == "__main__":
    main()
