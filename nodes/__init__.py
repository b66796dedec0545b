"""drpo.nodes: see the README's architecture section for what this layer holds."""
