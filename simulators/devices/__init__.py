"""Device models, one module per kind; each steps all devices of its kind at once (NumPy)."""
