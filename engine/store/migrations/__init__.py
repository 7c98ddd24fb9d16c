"""Alembic migrations of the store's tables; `engine db upgrade` applies them."""
