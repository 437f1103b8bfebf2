"""The cloud disk (``disk`` service): the seed system's HTTP API on the content store."""
