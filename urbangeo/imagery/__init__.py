"""Imagery: satellite/overhead tiles per region and street-view images per sample point."""
