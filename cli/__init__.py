"""drpo.cli: the typer commands (`drpo ...`): parse, call the API, print; nothing imports it."""
