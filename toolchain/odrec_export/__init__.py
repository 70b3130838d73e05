"""odrec-export: train, compress and export compact session-based recommenders for on-device use."""

__version__ = "0.1.0"
