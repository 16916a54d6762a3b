"""The registry of datasets, adapters, models and releases.

Embedded SQLite by default (`$HAI_HOME/registry.sqlite`); `ArtifactStore` is the interface a team's
server-backed store implements instead. `python -m trainer data list` exercises it.
"""

from hai_tools.registry.base import ArtifactStore, DatasetFile, DatasetRecord
from hai_tools.registry.sqlite import SQLiteArtifactStore, open_registry

__all__ = ["ArtifactStore", "DatasetFile", "DatasetRecord", "SQLiteArtifactStore", "open_registry"]
