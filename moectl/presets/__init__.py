"""Run presets shipped as YAML files (see moectl.config.load_preset)."""
