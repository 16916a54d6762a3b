"""The clinical-safety policy every reasoner result passes through: the review flag and disclaimer always,
and abstention (with the rule's reason) on out-of-scope requests. The rules are data:
`hai_tools/data/safety_policy.yaml`, or the file named by `$HAI_SAFETY_POLICY`.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hai_tools.errors import ConfigError


class AbstainRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    reason: str
    patterns: list[str]

    @field_validator("patterns")
    @classmethod
    def _compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            re.compile(pattern)
        return patterns


class Abstention(BaseModel):
    rule: str
    reason: str


class SafetyPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disclaimer: str
    min_clinical_words: int = Field(4, ge=0)
    clinical_vocabulary: list[str]
    abstain_rules: list[AbstainRule]

    def check(self, text: str) -> Abstention | None:
        """The first rule a request breaks, or None when the reasoner may answer it."""
        lowered = " ".join(text.lower().split())
        for rule in self.abstain_rules:
            if any(re.search(p, lowered) for p in rule.patterns):
                return Abstention(rule=rule.id, reason=rule.reason)
        words = re.findall(r"[a-z]+", lowered)
        if len(words) < self.min_clinical_words or not any(
            term in lowered for term in self.clinical_vocabulary
        ):
            return Abstention(
                rule="insufficient_clinical_content",
                reason="Not enough clinical content to reason about: give the age, findings and the question.",
            )
        return None


def load_policy(path: Path | None = None) -> SafetyPolicy:
    source = path or (Path(os.environ["HAI_SAFETY_POLICY"]) if os.environ.get("HAI_SAFETY_POLICY") else None)
    text = (
        source.read_text()
        if source
        else resources.files("hai_tools").joinpath("data/safety_policy.yaml").read_text()
    )
    try:
        return SafetyPolicy.model_validate(yaml.safe_load(text))
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"safety policy {source or 'built-in'} is invalid: {str(exc).splitlines()[0]}"
        ) from None


@lru_cache(maxsize=1)
def default_policy() -> SafetyPolicy:
    return load_policy()
