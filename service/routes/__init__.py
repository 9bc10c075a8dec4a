"""The API's routers: ``operations`` (probes, info, metrics) and ``reconstruction``."""
