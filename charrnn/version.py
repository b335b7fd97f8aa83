"""The version of charrnn (its own module, so that the library can read it without the package's
lazy facade)."""

__version__ = "0.1.0"
