"""drpo.graph: see the README's architecture section for what this layer holds."""
