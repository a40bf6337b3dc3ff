"""The Typer command-line interface: parses options, calls the core, renders with rich."""
