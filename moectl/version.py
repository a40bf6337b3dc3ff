"""moectl's version, on its own so that any module can record it without importing the package
face (moectl/__init__.py, which hands on `load_model` from the model layer)."""

__version__ = "0.1.0"
