"""Recipes (end-to-end experiments) built on kfrontend. Run from the repository root, e.g.
``python -m recipes.timit demo --work /tmp/timit-demo``."""
