"""Helpers shared by tests in several folders (import them as `helpers.<module>`)."""
