"""Storage: SQLAlchemy 2 models, the engine and migrations, repository functions, mock data."""

from voiceforge.store.db import Database

__all__ = ["Database"]
