"""The console commands: one module per command, and what every command does as it starts."""
