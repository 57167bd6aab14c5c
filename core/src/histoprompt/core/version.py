"""Software version stamped into every result manifest."""

__version__ = "0.1.0"
