"""hai-tools core: artifact manifests, the dataset registry, settings and the embedded default models.

Everything the trainer, export, evals, governance and skills share lives here, grouped by concept.
`python -m trainer --help` is the first command that exercises it.
"""

__version__ = "0.1.0"
