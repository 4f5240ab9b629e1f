"""fatlib: FAT2019-style audio tagging as distributed batch jobs on Ray."""

__version__ = "0.1.0"
