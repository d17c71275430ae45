"""Defenses that plug in at the cut, the loss, the labels or the returned gradients."""
