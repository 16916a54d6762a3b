"""The radiology tool on the tiny image-text model, served by `mcp_server.py --http` in its own process:
`read_radiograph` over MCP and `POST /infer_image` over REST answer a PNG and a DICOM (de-identified first),
each with the review flag, disclaimer, model identity, backend and audit id; oversized, truncated, non-image and
burned-in payloads get typed errors and the server keeps serving; nothing of an image reaches the log or the
audit; a pipeline caller gets no model reading."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import make_callers, spawn_http_server, wait_for_http, write_server_config
from tests.radiology.test_prepare import draw, write_dicom

TOKENS: dict[str, str] = {}
LOGS: dict[str, Path] = {}
MAX_IMAGE_BYTES = 64 * 1024


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import pydicom

    folder = tmp_path_factory.mktemp("images")
    draw(folder / "hand.png", 3)
    write_dicom(folder / "xray.dcm", 1)
    flagged = pydicom.dcmread(folder / "xray.dcm")
    flagged.BurnedInAnnotation = "YES"
    flagged.save_as(folder / "burned.dcm")
    (folder / "truncated.png").write_bytes((folder / "hand.png").read_bytes()[:200])
    (folder / "notes.txt").write_bytes(b"Doe^Jane MRN-0042 not an image" * 10)
    from PIL import Image

    Image.new("L", (400, 400), 7).save(folder / "big.png", compress_level=0)  # 160 kB raw > the limit
    return {p.stem: p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def served(
    tiny_vlm: Path, tmp_path_factory: pytest.TempPathFactory, server_env: dict[str, str]
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("radiology-server")
    TOKENS.update(make_callers(folder / "callers.yaml", **{"radiologist": "clinician", "bot": "pipeline"}))
    config = write_server_config(
        folder / "server.yaml",
        reasoner=None,
        embedder=None,
        backends=["local"],
        callers=str(folder / "callers.yaml"),
        audit_log=str(folder / "audit.jsonl"),
        radiology={"model": str(tiny_vlm), "max_image_bytes": MAX_IMAGE_BYTES, "thresholds": {"rop": 0.4}},
    )
    proc, base, log = spawn_http_server(
        config, tmp_path_factory.mktemp("radiology-log") / "server.log", server_env
    )
    LOGS["server"], LOGS["audit"] = log, folder / "audit.jsonl"
    wait_for_http(f"{base}/health", proc, log)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def _mcp(url: str, caller: str, body: Any) -> Any:
    async def run() -> Any:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {TOKENS[caller]}"}, timeout=httpx2.Timeout(300)
        )
        async with Client(
            streamable_http_client(f"{url}/mcp", http_client=http), read_timeout_seconds=300
        ) as c:
            return await body(c)

    return asyncio.run(run())


def _rest(url: str, caller: str, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{url}/infer_image", json=payload, headers={"Authorization": f"Bearer {TOKENS[caller]}"}, timeout=300
    )


def _reviewed(result: dict[str, Any]) -> None:
    assert result["requires_clinician_review"] is True and result["disclaimer"]
    assert result["backend"] == "local" and result["model"]["base"] and result["audit_id"]


def test_a_png_over_mcp_and_a_dicom_over_rest_are_read(
    served: str, images: dict[str, Path], tiny_vlm: Path
) -> None:
    async def calls(client: Any) -> dict[str, Any]:
        return {
            "bone_age": await client.call_tool(
                "read_radiograph", {"task": "bone_age", "image_base64": _b64(images["hand"])}
            ),
            "rop": await client.call_tool(
                "read_radiograph",
                {"task": "rop", "image_base64": _b64(images["hand"]), "media_type": "image/png"},
            ),
            "dicom": await client.call_tool(
                "read_radiograph", {"task": "fracture", "image_base64": _b64(images["xray"])}
            ),
        }

    out = _mcp(served, "radiologist", calls)
    assert not out["bone_age"].is_error and not out["rop"].is_error
    bone_age, rop = out["bone_age"].structured_content, out["rop"].structured_content
    _reviewed(bone_age)
    assert bone_age["task"] == "bone_age" and bone_age["image"]["media_type"] == "image/png"
    assert (bone_age["bone_age_months"] is None) == (
        bone_age["note"] == "the model's answer holds no number of months"
    )
    assert out["dicom"].structured_content["image"]["media_type"] == "application/dicom"
    _reviewed(rop)
    # what is served is what the evaluation reads: the probability equals `evals radiology`'s reading of the same
    # image by the same model, recomputed here in the test's process
    from PIL import Image

    from hai_tools.radiology_reading import load_reader, read_image

    evaluated = read_image(*load_reader(tiny_vlm), "rop", Image.open(images["hand"]))["p_yes"]
    assert rop["threshold"] == 0.4 and rop["probability"] == pytest.approx(evaluated, abs=1e-6)
    assert rop["finding"] is (evaluated >= 0.4)

    response = _rest(served, "radiologist", {"task": "fracture", "image_base64": _b64(images["xray"])})
    assert response.status_code == 200, response.text
    fracture = response.json()
    _reviewed(fracture)
    assert fracture["image"]["media_type"] == "application/dicom"
    assert (fracture["image"]["width"], fracture["image"]["height"]) == (48, 64)
    assert fracture["threshold"] == 0.5  # the default where the config set only rop's
    png = _rest(served, "radiologist", {"task": "bone_age", "image_base64": _b64(images["hand"])})
    assert png.status_code == 200 and png.json()["image"]["media_type"] == "image/png"


@pytest.mark.parametrize(
    ("name", "declared", "expected"),
    [
        ("big", None, f"image is {{size}} bytes; the limit is {MAX_IMAGE_BYTES}"),
        ("truncated", None, "unreadable image/png: "),
        ("notes", None, "not a PNG, JPEG or DICOM file"),
        ("hand", "application/dicom", "media_type says application/dicom but the bytes are image/png"),
        ("burned", None, "DICOM refused by de-identification: refused: BurnedInAnnotation is YES"),
    ],
)
def test_bad_images_get_typed_errors_and_the_server_keeps_serving(
    served: str, images: dict[str, Path], name: str, declared: str | None, expected: str
) -> None:
    path = images[name]
    expected = expected.format(size=path.stat().st_size)
    payload = {"task": "fracture", "image_base64": _b64(path)} | (
        {"media_type": declared} if declared else {}
    )

    async def call(client: Any) -> Any:
        return await client.call_tool("read_radiograph", payload)

    refused = _mcp(served, "radiologist", call)
    assert refused.is_error and refused.content[0].text.startswith("ImageRejected: " + expected)
    response = _rest(served, "radiologist", payload)
    assert response.status_code == 422 and response.json()["error"] == "image_rejected"
    assert response.json()["detail"].startswith(expected)
    again = _rest(served, "radiologist", {"task": "rop", "image_base64": _b64(images["hand"])})
    assert again.status_code == 200  # still serving


def test_a_pipeline_caller_gets_no_reading_and_nothing_of_an_image_is_kept(
    served: str, images: dict[str, Path]
) -> None:
    async def call(client: Any) -> Any:
        listed = [t.name for t in (await client.list_tools()).tools]
        with pytest.raises(MCPError, match="clinician review"):
            await client.call_tool("read_radiograph", {"task": "rop", "image_base64": _b64(images["hand"])})
        return listed

    assert "read_radiograph" not in _mcp(served, "bot", call)
    assert _rest(served, "bot", {"task": "rop", "image_base64": _b64(images["hand"])}).status_code == 403
    kept = LOGS["server"].read_text() + LOGS["audit"].read_text()
    for secret in ("Doe^Jane", "MRN-0042", "ACC123", "Children's Hospital", _b64(images["hand"])[:40]):
        assert secret not in kept, secret
    assert '"tool": "read_radiograph"' in LOGS["audit"].read_text()


def test_the_bone_age_interval_comes_from_an_evaluation_of_this_model_only(
    tiny_vlm: Path, tmp_path: Path
) -> None:
    """The interval is +- the MAE of an evaluation report whose inputs name the served model's manifest; a
    report of another model is refused at start, and without a report the result says there is no interval.
    (The model and reports here are sealed by hand: the evaluation itself is tested in test_pipeline.)"""
    import json
    import shutil

    from hai_tools.audit import AuditLog
    from hai_tools.errors import ConfigError
    from hai_tools.manifest import ArtifactInput, Manifest, write_manifest
    from skills.config import RadiologySettings
    from skills.radiology_skill import RadiologySkill

    model = tmp_path / "merged"
    shutil.copytree(tiny_vlm, model)
    sealed = write_manifest(model, Manifest(kind="merged_model", name="pedirad-tiny-merged"))

    def report(name: str, model_hash: str, mae: float) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "report.json").write_text(
            json.dumps({"metrics": {"bone_age_mae": {"value": mae, "n": 40}}})
        )
        write_manifest(
            folder,
            Manifest(
                kind="eval_report",
                name=name,
                inputs=[ArtifactInput(kind="merged_model", name="m", hash=model_hash)],
            ),
        )
        return folder

    audit = AuditLog(tmp_path / "audit.jsonl")
    ours = report("ours", sealed.content_hash, 7.5)
    skill = RadiologySkill(RadiologySettings(model=str(model), eval_report=str(ours)), audit)
    assert skill.mae == 7.5 and skill.identity.manifest_hash == sealed.content_hash
    other = report("other", "sha256:" + "0" * 64, 1.0)
    with pytest.raises(ConfigError, match="is not an evaluation of the configured model"):
        RadiologySkill(RadiologySettings(model=str(model), eval_report=str(other)), audit)
    with pytest.raises(ConfigError, match="is a merged_model, not an evaluation report"):
        RadiologySkill(RadiologySettings(model=str(model), eval_report=str(model)), audit)

    class Reading:  # the model's reading, fixed: this test is about the interval, not the model
        def __init__(self, skill: RadiologySkill) -> None:
            skill._read_sync = lambda task, image: {"answer": "Bone age: 60", "prediction": 60.0}  # type: ignore[method-assign]

    from skills.contracts import RadiographRequest

    Reading(skill)
    png = tmp_path / "hand.png"
    draw(png, 1)
    result = asyncio.run(skill.read(RadiographRequest(task="bone_age", image_base64=_b64(png))))
    assert result.bone_age_months == 60.0 and result.bone_age_interval_months == (52.5, 67.5)
    bare = RadiologySkill(RadiologySettings(model=str(model)), audit)
    Reading(bare)
    result = asyncio.run(bare.read(RadiographRequest(task="bone_age", image_base64=_b64(png))))
    assert (
        result.bone_age_interval_months is None
        and result.note == "no evaluation report configured: no interval"
    )


def test_a_radiology_release_goes_through_gate_card_signature_and_server(
    tiny_vlm: Path,
    tmp_path: Path,
    server_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    images: dict[str, Path],
) -> None:
    """prep -> image-text LoRA -> merge -> evals radiology -> gate -> signed release with the radiology task card
    -> the server serves read_radiograph from the verified release alone, results naming the release. A
    radiology model released with the screening card is refused."""
    from evals.__main__ import main as evals_main
    from export.__main__ import main as export_main
    from governance.__main__ import main as governance_main
    from tests.radiology.test_pipeline import _train
    from tests.radiology.test_prepare import make_raw
    from trainer.__main__ import main as trainer_main

    raw = make_raw(tmp_path / "raw")
    prep = ["data", "prepare-radiology", "--raw_dir", str(raw), "--output_dir", str(tmp_path / "prepared")]
    prep += ["--image_size", "48", "--register", "pedirad-release@1", "--deid-attestation", "test: synthetic"]
    assert trainer_main(prep) == 0
    adapter = _train(tiny_vlm, "pedirad-release@1", tmp_path / "adapter", "lora")
    merged = tmp_path / "merged"
    assert export_main(["merge", str(adapter), "--output_dir", str(merged)]) == 0
    report = tmp_path / "report"
    capsys.readouterr()
    unknown = ["radiology", str(merged), "--dataset", "pedirad-release@1", "--split", "holdout"]
    assert evals_main([*unknown, "--output_dir", str(report)]) == 2  # refused before the model loads
    assert "pedirad-release@1 has no 'holdout' split (has: " in capsys.readouterr().err
    assert not report.exists()
    args = ["radiology", str(merged), "--dataset", "pedirad-release@1", "--split", "train"]
    assert (
        evals_main([*args, "--output_dir", str(report), "--n_resamples", "20", "--min_group_size", "2"]) == 0
    )
    policy = tmp_path / "policy.yaml"  # what this tiny model can pass: the parse rate is reported, not good
    policy.write_text("split: train\nmin_group_size: 2\nmetrics:\n  bone_age_unparsed_rate: {max: 1.0}\n")
    assert governance_main(["keygen", "--out", str(tmp_path / "keys" / "release")]) == 0
    release = [str(merged), "--report", str(report), "--policy", str(policy), "--key"]
    release += [str(tmp_path / "keys" / "release.key")]

    capsys.readouterr()
    refused = ["release", *release, "--output_dir", str(tmp_path / "wrong"), "--task", "screening"]
    assert governance_main(refused) == 2
    assert "is an image-text model but task screening is text-classification" in capsys.readouterr().err
    assert not (tmp_path / "wrong").exists()

    folder = tmp_path / "release"
    ok = [
        "release",
        *release,
        "--output_dir",
        str(folder),
        "--task",
        "radiology",
        "--release_id",
        "pedirad-1",
    ]
    assert governance_main(ok) == 0
    card = (folder / "README.md").read_text()
    assert "pediatric radiology reading support" in card and "developmental screening" not in card.lower()
    assert (folder / "models" / "radiology" / "manifest.json").exists()
    assert not (folder / "models" / "reasoner").exists()

    TOKENS.update(make_callers(tmp_path / "callers.yaml", **{"reader": "clinician"}))
    config = write_server_config(
        tmp_path / "server.yaml",
        release=str(folder),
        release_public_key=str(tmp_path / "keys" / "release.pub"),
        reasoner=None,
        backends=["local"],
        callers=str(tmp_path / "callers.yaml"),
    )
    proc, base, log = spawn_http_server(config, tmp_path / "server.log", server_env)
    try:
        wait_for_http(f"{base}/health", proc, log)
        response = _rest(base, "reader", {"task": "bone_age", "image_base64": _b64(images["xray"])})
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["model"]["release"] == "pedirad-1" and result["model"]["release_hash"]
        assert result["requires_clinician_review"] is True
        import json

        mae = json.loads((folder / "eval_report.json").read_text())["metrics"]["bone_age_mae"]["value"]
        months = result["bone_age_months"]
        if months is not None and mae is not None:  # the interval is +- the release's evaluated MAE
            assert result["bone_age_interval_months"] == [max(0.0, months - mae), months + mae]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
