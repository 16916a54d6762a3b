"""`python -m trainer`: config-driven LoRA/QLoRA fine-tuning with a dataset registry and provenance."""
