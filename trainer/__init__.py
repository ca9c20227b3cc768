"""vlaunch trainer: the VLM fine-tuning loop (plain PyTorch) and its Ray Train host.

Modules named in `trainer.models.families`, `trainer.models.presets`, `trainer.models.shapes`
and `trainer.data.{formats,registry,check}` stay importable without torch; everything else may
import the training stack.
"""
