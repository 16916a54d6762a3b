"""The clinical-safety policy: the disclaimer every reasoner result carries, the request and answer categories
the guard abstains on (each with its threshold and the reason the caller is given), and the deterministic rules.
The policy is data: `hai_tools/data/safety_policy.yaml`, or the file named by `$HAI_SAFETY_POLICY` or by the
server config's `safety_policy`. hai_tools.guard applies it.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hai_tools.errors import ConfigError

REQUEST_ORDER = (
    "emergency_now",
    "prompt_injection",
    "patient_directed_treatment",
    "non_clinical",
    "no_clinical_content",
)
ANSWER_ORDER = ("patient_directed_treatment", "definitive_diagnosis_for_family", "skip_clinical_review")


class Category(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(gt=0, le=1)
    reason: str = Field(min_length=1)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    category: str
    patterns: list[str] = Field(min_length=1)

    @field_validator("patterns")
    @classmethod
    def _compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a regular expression ({exc})") from None
        return patterns

    def matches(self, folded: str) -> bool:
        return any(re.search(p, folded) for p in self.patterns)


class Abstention(BaseModel):
    """Why the guard stopped a request or withheld an answer: the category, the reason the caller reads, where
    (request, context passage N, answer) and which layer (a rule id, or the classifier with its score)."""

    rule: str
    reason: str
    where: str = "request"
    source: str = "rule"
    score: float | None = None


class SafetyPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disclaimer: str
    min_words: int = Field(1, ge=0)
    request_categories: dict[str, Category]
    answer_categories: dict[str, Category]
    rules: list[Rule] = Field(default_factory=list)
    answer_rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_categories(self) -> SafetyPolicy:
        if set(self.request_categories) != set(REQUEST_ORDER):
            raise ValueError(f"request_categories must be exactly {', '.join(REQUEST_ORDER)}")
        if set(self.answer_categories) != set(ANSWER_ORDER):
            raise ValueError(f"answer_categories must be exactly {', '.join(ANSWER_ORDER)}")
        for rule in self.rules:
            if rule.category not in self.request_categories:
                raise ValueError(f"rule {rule.id}: unknown request category {rule.category!r}")
        for rule in self.answer_rules:
            if rule.category not in self.answer_categories:
                raise ValueError(f"answer rule {rule.id}: unknown answer category {rule.category!r}")
        return self

    def rule_check(self, text: str, answer: bool = False) -> Abstention | None:
        """The deterministic layer: the first category (in priority order) one of whose rules matches."""
        folded = " ".join(text.lower().split())
        order, rules, categories = (
            (ANSWER_ORDER, self.answer_rules, self.answer_categories)
            if answer
            else (REQUEST_ORDER, self.rules, self.request_categories)
        )
        for category in order:
            for rule in rules:
                if rule.category == category and rule.matches(folded):
                    return Abstention(rule=category, reason=categories[category].reason, source=rule.id)
        if not answer and len(re.findall(r"\w+", folded)) < self.min_words:
            return Abstention(
                rule="no_clinical_content",
                reason=self.request_categories["no_clinical_content"].reason,
                source="min_words",
            )
        return None

    def check(self, text: str) -> Abstention | None:
        """Rules only (no classifier): what a deployment without a guard artifact enforces."""
        return self.rule_check(text)


def load_policy(path: Path | None = None) -> SafetyPolicy:
    source = path or (Path(os.environ["HAI_SAFETY_POLICY"]) if os.environ.get("HAI_SAFETY_POLICY") else None)
    try:
        text = (
            source.read_text()
            if source
            else resources.files("hai_tools").joinpath("data/safety_policy.yaml").read_text()
        )
        return SafetyPolicy.model_validate(yaml.safe_load(text))
    except OSError:
        raise ConfigError(f"safety policy {source} cannot be read") from None
    except yaml.YAMLError:
        raise ConfigError(f"safety policy {source or 'built-in'} is not valid YAML") from None
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            detail = (f"{where}: " if where else "") + str(error["msg"]).removeprefix("Value error, ")
        else:
            detail = str(exc).splitlines()[0]
        raise ConfigError(f"safety policy {source or 'built-in'} is invalid: {detail}") from None


@lru_cache(maxsize=1)
def default_policy() -> SafetyPolicy:
    return load_policy()
