"""What the tests share: generated data, tiny-run overrides, commands run as a user runs
them, fault injectors. Imported as `helpers.<module>` (pyproject's pytest `pythonpath`)."""
