"""The jobs: thin shells that parse flags, call a stage and print its summary."""
