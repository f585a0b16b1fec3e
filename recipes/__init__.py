"""Recipes: the Hydra main job and its parts (corpus, byte-level model, dashboard, compare)."""
