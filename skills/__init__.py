"""EmbedSkill and ReasonerSkill: pydantic contracts, backends (vllm / local / tflite) and failover."""
