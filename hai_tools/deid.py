"""DICOM de-identification to the PS3.15 Basic Application Level Confidentiality Profile, for training data
(`prepare-radiology`) and for images that reach a model at inference.

Built on dicognito: it walks every element, nested sequences and file meta included, replaces UIDs
consistently (the same source UID always maps to the same new one for a given seed), replaces names and IDs,
and shifts dates and times by one offset per seed, so intervals are kept. Chosen over pydicom's `deid`, which
removes rather than remaps by default and makes inconsistent UIDs without a lookup table. What dicognito lacks,
added here: private tags removed; the profile's free-text attributes (descriptions, comments, history) removed;
PatientAge removed unless the policy keeps it (the profile's Retain Patient Characteristics option); images
with burned-in annotation refused unless the policy allows them with a reason; a secret salt required. The
seed is an HMAC of the patient's ID under that salt: each patient's dates move by their own offset, and a
patient's UIDs stay consistent across files and runs.
"""

from __future__ import annotations

import hashlib
import hmac
from importlib.metadata import version
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hai_tools.errors import HaiError

PROFILE = "DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile"
PUBLIC_SALTS = frozenset({"", "hai-tools", "salt", "changeme", "secret"})
MIN_SALT_CHARS = 16
# Free text the basic profile removes (action X), beside what dicognito replaces
FREE_TEXT = (
    "AdditionalPatientHistory",
    "AdmittingDiagnosesDescription",
    "DerivationDescription",
    "ImageComments",
    "ImagingServiceRequestComments",
    "InterpretationText",
    "PatientComments",
    "PerformedProcedureStepDescription",
    "ProtocolName",
    "ReasonForStudy",
    "RequestedProcedureComments",
    "RequestedProcedureDescription",
    "ScheduledProcedureStepDescription",
    "SeriesDescription",
    "StudyComments",
    "StudyDescription",
    "TextComments",
    "TextString",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "PatientAddress",
    "PatientBirthName",
    "PatientMotherBirthName",
    "EthnicGroup",
    "Occupation",
)
# Modalities that often carry text burned into the pixels (ultrasound, secondary capture, angiography, ...)
BURNED_IN_MODALITIES = frozenset({"US", "OT", "SC", "XA", "ES", "DOC", "GM", "SM", "XC"})


class DeidRefused(HaiError):
    """An image that must not be de-identified automatically (burned-in text), or a salt that is not secret."""


class DeidPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_patient_age: bool = Field(False, description="the profile's Retain Patient Characteristics option")
    allow_burned_in: bool = Field(False, description="accept images with (suspected) burned-in text")
    burned_in_reason: str | None = Field(
        None, description="why burned-in text is acceptable (required with allow_burned_in; recorded)"
    )

    def model_post_init(self, _: Any) -> None:
        if self.allow_burned_in and not (self.burned_in_reason or "").strip():
            raise DeidRefused(
                "allow_burned_in needs burned_in_reason (it is recorded in the dataset manifest)"
            )


def require_secret_salt(salt: str | None) -> str:
    """The pseudonym salt, refused when it is missing, public or short (pseudonyms from a public salt can be
    reversed by hashing candidate IDs)."""
    if salt is None or salt.strip().lower() in PUBLIC_SALTS:
        raise DeidRefused(
            "a secret pseudonym salt is required: set HAI_PSEUDONYM_SALT (at least 16 characters, kept secret)"
        )
    if len(salt) < MIN_SALT_CHARS:
        raise DeidRefused(f"the pseudonym salt is too short ({len(salt)} < {MIN_SALT_CHARS} characters)")
    return salt


def pseudonym(patient_id: str, salt: str) -> str:
    """A patient's pseudonym: keyed (HMAC-SHA256 under the secret salt), stable across runs."""
    return "p-" + hmac.new(salt.encode(), f"patient:{patient_id}".encode(), hashlib.sha256).hexdigest()[:16]


def burned_in_reason(dataset: Any) -> str | None:
    """Why an image may carry burned-in text: flagged YES, or not flagged on a modality that often has it."""
    flag = str(getattr(dataset, "BurnedInAnnotation", "") or "").upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    modality = str(getattr(dataset, "Modality", "") or "").upper()
    if not flag and modality in BURNED_IN_MODALITIES:
        return f"BurnedInAnnotation is absent on modality {modality}, which often carries burned-in text"
    return None


def _remove_everywhere(dataset: Any, keywords: tuple[str, ...]) -> None:
    for keyword in keywords:
        if keyword in dataset:
            delattr(dataset, keyword)
    for element in list(dataset):
        if element.VR == "SQ":
            for item in element.value:
                _remove_everywhere(item, keywords)


def deidentify(dataset: Any, patient: str, salt: str, policy: DeidPolicy | None = None) -> None:
    """De-identify `dataset` in place; `patient` is the patient's pseudonym (`pseudonym`), written as PatientID.
    Raises DeidRefused for burned-in text the policy does not allow."""
    from dicognito.anonymizer import Anonymizer

    policy = policy or DeidPolicy()
    reason = burned_in_reason(dataset)
    if reason is not None and not policy.allow_burned_in:
        raise DeidRefused(f"refused: {reason} (allow only with a recorded reason)")
    seed = hmac.new(salt.encode(), f"dicom:{patient}".encode(), hashlib.sha256).hexdigest()
    Anonymizer(seed=seed).anonymize(dataset)
    dataset.remove_private_tags()
    _remove_everywhere(dataset, FREE_TEXT + (() if policy.keep_patient_age else ("PatientAge",)))
    dataset.PatientID = patient
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = f"hai-tools: {PROFILE}; dicognito {version('dicognito')}"
    dataset.LongitudinalTemporalInformationModified = "MODIFIED"


def applied(policy: DeidPolicy) -> dict[str, Any]:
    """What was applied, for the dataset manifest."""
    return {
        "profile": PROFILE,
        "library": f"dicognito {version('dicognito')}",
        "pydicom": version("pydicom"),
        "uids": "replaced consistently per patient (seeded by an HMAC of the patient ID under the secret salt)",
        "dates": "shifted by one offset per patient (intervals kept)",
        "private_tags": "removed",
        "free_text_removed": list(FREE_TEXT),
        "patient_age": "kept" if policy.keep_patient_age else "removed",
        "burned_in": (
            f"allowed: {policy.burned_in_reason}"
            if policy.allow_burned_in
            else "refused (flagged or suspected)"
        ),
        "pseudonyms": "HMAC-SHA256 under a secret salt",
    }
