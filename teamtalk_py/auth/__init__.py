"""Authentication shared by the HTTP services: API tokens (``tokens``)."""
