"""The torch-free core of vlaunch: the job spec and its errors, hardware profiles, the batch
planner, the memory estimators, the plan, and the model and data catalogs they read.

Both the CLI and backends (`launcher`) and the training side (`trainer`) build on it; it
imports neither of them, nor torch, transformers or ray (import contracts in `make lint`).
"""
