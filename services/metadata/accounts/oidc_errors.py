"""The two ways an OIDC sign-in fails, apart from the provider's code (services/metadata/accounts/oidc.py),
so that the console can name them without loading an HTTP client and a JWT library into every
metadata plane that has no OIDC provider configured."""

from __future__ import annotations


class ProviderUnavailable(Exception):
    """The OIDC provider cannot be reached or answered nonsense."""


class SignInRefused(Exception):
    """The provider refused the sign-in, or its ID token failed a check."""
