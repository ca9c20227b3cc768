"""Datasets without torch: formats, registries, mixtures, media, samplers, `data check`."""
