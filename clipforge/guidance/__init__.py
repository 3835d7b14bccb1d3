"""Guidance: what scores an image against prompts (embedders, cutouts, losses, the Guide)."""
