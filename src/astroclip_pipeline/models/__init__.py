"""Spectrum transformer, image encoder, projection heads and the AstroCLIP pair (later issues)."""
