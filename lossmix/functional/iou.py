"""Placeholder module filled in by its family; see lossmix/functional/__init__.py."""

__all__: list[str] = []
