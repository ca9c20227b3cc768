"""Ovis2.5: the projector reads the vision tower's last hidden state before its final norm."""

from vlaunch_core.models.quirks import Quirks

QUIRKS = Quirks(unused=lambda config: ("model.vision_tower.post_layernorm",))
