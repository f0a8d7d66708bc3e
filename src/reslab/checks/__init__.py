"""What is checked before anything is built: the config against the code, the command line."""
