"""unifrost: relay pub/sub broker messages to browsers over Server-Sent Events."""

__version__ = "0.1.0"
