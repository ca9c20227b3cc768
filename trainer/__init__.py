"""vlaunch trainer: the VLM fine-tuning loop (plain PyTorch) and its Ray Train host.

Builds on the torch-free `vlaunch_core` (spec, plan, catalogs); never imports the CLI
(`launcher`). Modules here may import the training stack at the top.
"""
