"""fatlib: FAT2019-style audio tagging as distributed batch jobs on Ray.

Floors, every import pointing down (docs/ARCHITECTURE.md): `core` (pure numpy/torch), `io`
(storage, datasets, feature store, artifacts), `stages` (Ray jobs), `report` and `tools`.
"""

__version__ = "0.1.0"
