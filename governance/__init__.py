"""`python -m governance`: model cards, lineage, DP plan, signed release manifests and verification."""
