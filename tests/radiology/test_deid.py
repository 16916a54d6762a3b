"""DICOM de-identification (hai_tools/deid.py) tag by tag on a corpus built with pydicom: nested sequences,
private tags, every date and UID kind, descriptions and comments, burned-in flags. Each element the profile
names is checked against the table below; pixel data is unchanged; the same salt gives the same pseudonyms."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hai_tools.deid import DeidPolicy, DeidRefused, deidentify, pseudonym, require_secret_salt

SALT = "test-salt-not-public-0123456789"
REMOVED = (
    "PatientAge",
    "StudyDescription",
    "SeriesDescription",
    "ImageComments",
    "PatientComments",
    "AdditionalPatientHistory",
    "InstitutionName",
    "InstitutionAddress",
    "ProtocolName",
)
REPLACED = (
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "OperatorsName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)
DATES = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
KEPT = ("PatientSex", "Modality", "Rows", "Columns", "BitsAllocated")


def dicom(patient: str = "MRN-0042", study_uid: str = "1.2.826.0.1.3680043.8.498.1", **extra: Any) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    sop = generate_uid()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, sop
    ds.PatientName, ds.PatientID, ds.PatientSex = "Doe^Jane", patient, "F"
    ds.PatientBirthDate, ds.PatientAge = "20200115", "004Y"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240310"
    ds.StudyTime = "101500"
    ds.AccessionNumber, ds.StudyID = "ACC123", "ST77"
    ds.ReferringPhysicianName, ds.OperatorsName = "Who^Doctor", "Tech^Tina"
    ds.InstitutionName, ds.InstitutionAddress = "St Somewhere Children's", "1 Main St"
    ds.StudyDescription, ds.SeriesDescription = "Jane Doe left hand", "hand PA Jane"
    ds.ImageComments, ds.PatientComments = "mother says Jane fell", "lives at 1 Main St"
    ds.AdditionalPatientHistory, ds.ProtocolName = "Jane, sibling of John Doe", "Doe protocol"
    ds.Modality, ds.BurnedInAnnotation = "DX", "NO"
    referenced = Dataset()
    referenced.ReferencedSOPClassUID, referenced.ReferencedSOPInstanceUID = meta.MediaStorageSOPClassUID, sop
    request = Dataset()
    request.RequestedProcedureDescription = "Jane Doe bone age"
    request.AccessionNumber = "ACC123"
    referenced.RequestAttributesSequence = Sequence([request])
    ds.ReferencedImageSequence = Sequence([referenced])
    ds.add_new((0x0009, 0x0010), "LO", "HOSPITAL PRIVATE")
    ds.add_new((0x0009, 0x1001), "LO", "Jane Doe, bed 4")
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 16, 12, 11
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = np.arange(64, dtype=np.uint16).reshape(8, 8).tobytes()
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def _days(value: str) -> int:
    return (datetime.date(int(value[:4]), int(value[4:6]), int(value[6:8])) - datetime.date(1900, 1, 1)).days


def test_every_element_the_profile_names_is_removed_or_transformed() -> None:
    original = dicom()
    ds = copy.deepcopy(original)
    patient = pseudonym("MRN-0042", SALT)
    deidentify(ds, patient, SALT)
    for keyword in REMOVED:
        assert keyword not in ds, keyword
    for keyword in REPLACED:
        assert keyword in ds and ds.data_element(keyword).value != original.data_element(keyword).value, (
            keyword
        )
    assert ds.PatientID == patient
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID  # remapped together
    for keyword in DATES:
        assert ds.data_element(keyword).value != original.data_element(keyword).value, keyword
    # one offset for every date of the patient: intervals kept
    assert _days(ds.StudyDate) - _days(ds.PatientBirthDate) == _days("20240310") - _days("20200115")
    for keyword in KEPT:
        assert ds.data_element(keyword).value == original.data_element(keyword).value, keyword
    assert ds.PixelData == original.PixelData
    assert not any(element.tag.is_private for element in ds.iterall())
    nested = ds.ReferencedImageSequence[0]
    assert nested.ReferencedSOPInstanceUID == ds.SOPInstanceUID  # the reference follows its image
    inner = nested.RequestAttributesSequence[0]
    assert "RequestedProcedureDescription" not in inner and inner.AccessionNumber == ds.AccessionNumber
    assert ds.PatientIdentityRemoved == "YES" and "PS3.15" in ds.DeidentificationMethod
    assert "Jane" not in str(ds) and "Doe" not in str(ds) and "MRN-0042" not in str(ds)


def test_the_same_salt_gives_the_same_pseudonyms_and_uids_and_a_study_stays_one_study() -> None:
    patient = pseudonym("MRN-0042", SALT)
    first, second, again = dicom(), dicom(), dicom()
    again.SOPInstanceUID = first.SOPInstanceUID
    again.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    again.SeriesInstanceUID, again.FrameOfReferenceUID = first.SeriesInstanceUID, first.FrameOfReferenceUID
    for ds in (first, second, again):
        deidentify(ds, patient, SALT)
    assert first.StudyInstanceUID == second.StudyInstanceUID == again.StudyInstanceUID  # one study
    assert first.SOPInstanceUID != second.SOPInstanceUID and first.SOPInstanceUID == again.SOPInstanceUID
    assert (first.PatientID, first.StudyDate) == (again.PatientID, again.StudyDate)
    assert pseudonym("MRN-0042", SALT) == patient != pseudonym("MRN-0042", SALT + "x")
    other = dicom(patient="MRN-0099")
    deidentify(other, pseudonym("MRN-0099", SALT), SALT)
    assert other.StudyDate != first.StudyDate  # each patient's dates move by their own offset


def test_patient_age_is_kept_only_where_the_policy_allows() -> None:
    ds = dicom()
    deidentify(ds, pseudonym("MRN-0042", SALT), SALT, DeidPolicy(keep_patient_age=True))
    assert ds.PatientAge == "004Y"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"BurnedInAnnotation": "YES"}, "BurnedInAnnotation is YES"),
        ({"Modality": "US", "BurnedInAnnotation": ""}, "absent on modality US"),
    ],
)
def test_burned_in_text_is_refused_unless_allowed_with_a_reason(extra: dict[str, str], reason: str) -> None:
    ds = dicom(**extra)
    with pytest.raises(DeidRefused, match=reason):
        deidentify(ds, pseudonym("MRN-0042", SALT), SALT)
    with pytest.raises(DeidRefused, match="needs burned_in_reason"):
        DeidPolicy(allow_burned_in=True)
    deidentify(ds, "p-x", SALT, DeidPolicy(allow_burned_in=True, burned_in_reason="text masked upstream"))
    assert ds.PatientIdentityRemoved == "YES"


@pytest.mark.parametrize("salt", [None, "", "hai-tools", "short-salt"])
def test_a_public_or_missing_salt_is_refused(salt: str | None) -> None:
    with pytest.raises(DeidRefused, match="salt"):
        require_secret_salt(salt)


def test_prepare_radiology_refuses_a_burned_in_dicom_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.__main__ import main

    raw = tmp_path / "raw"
    raw.mkdir()
    dicom(BurnedInAnnotation="YES").save_as(raw / "us.dcm", enforce_file_format=True)
    (raw / "labels.csv").write_text(
        "file,task,label,sex,age_months,site,patient_id\nus.dcm,bone_age,48,F,50,a,MRN-0042\n"
    )
    assert (
        main(["data", "prepare-radiology", "--raw_dir", str(raw), "--output_dir", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert "us.dcm" in err and "BurnedInAnnotation is YES" in err and not (tmp_path / "o").exists()
    monkeypatch.delenv("HAI_PSEUDONYM_SALT")
    assert (
        main(["data", "prepare-radiology", "--raw_dir", str(raw), "--output_dir", str(tmp_path / "o")]) == 2
    )
    assert "a secret pseudonym salt is required" in capsys.readouterr().err
