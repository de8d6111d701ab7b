"""Step-level Monte Carlo tree search over a reply: the tree and PUCT, value functions, step pairs."""
