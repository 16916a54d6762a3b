"""Typed errors of hai-tools. Each one carries a one-line message a CLI prints as is before exiting 2."""


class HaiError(Exception):
    """Base of every error hai-tools raises on purpose (bad input, failed check, missing artifact)."""


class ConfigError(HaiError):
    """A run configuration is invalid: unknown key, wrong type, conflicting values."""


class ManifestError(HaiError):
    """An artifact's manifest is missing, malformed, or its content hashes do not verify."""


class RegistryError(HaiError):
    """A registry operation was refused: unknown name@version, duplicate, missing attestation."""


class DatasetError(HaiError):
    """A dataset file cannot be read, has the wrong schema, or leaks patients across splits."""


class ModelResolutionError(HaiError):
    """A base model id resolves to nothing usable here (not a local folder, hub unreachable, ...)."""
