"""drpo.serve: the OpenAI-compatible server that answers with an aligned prompt."""
