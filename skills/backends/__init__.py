"""Skill backends, one file each behind one protocol (`base.Backend`): vllm (HTTP), local (in-process
transformers), tflite (LiteRT interpreter on export's edge models)."""
