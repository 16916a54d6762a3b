import assert from "node:assert/strict";
import { test } from "node:test";

import { HaiClient } from "../src/index.js";
import { clinicianToken, image, pipelineToken, url } from "./env.js";

const clinician = new HaiClient({ baseUrl: url, token: clinicianToken });
const pipeline = new HaiClient({ baseUrl: url, token: pipelineToken });

test("screening answers with a label for clinician review", async () => {
  const out = await clinician.screen({ case_id: "ts-1", age_months: 30, observations: "Says about 50 words." });
  assert.ok(out.ok, JSON.stringify(out));
  assert.equal(out.value.requires_clinician_review, true);
  assert.ok(["refer", "monitor", "on-track"].includes(out.value.label ?? ""));
  assert.ok(out.value.audit_id.length > 0 && out.value.disclaimer.length > 0);
});

test("errors are values: invalid input, wrong token, a role that may not read model output", async () => {
  const invalid = await clinician.screen({ case_id: "ts-2", age_months: 999, observations: "x" });
  assert.ok(!invalid.ok);
  assert.equal(invalid.error.kind, "invalid_input");
  assert.equal(invalid.error.status, 422);
  const stranger = await new HaiClient({ baseUrl: url, token: "not-a-token" }).screen({
    case_id: "ts-3", age_months: 30, observations: "x",
  });
  assert.ok(!stranger.ok && stranger.error.kind === "unauthorized" && stranger.error.status === 401);
  const bot = await pipeline.screen({ case_id: "ts-4", age_months: 30, observations: "x" });
  assert.ok(!bot.ok && bot.error.kind === "forbidden" && bot.error.status === 403);
});

test("a PNG and a DICOM are read; a burned-in DICOM is refused with the reason", async () => {
  const png = await clinician.readRadiograph({ task: "rop", image_base64: image("HAI_PNG") });
  assert.ok(png.ok, JSON.stringify(png));
  assert.equal(png.value.requires_clinician_review, true);
  assert.equal(png.value.image.media_type, "image/png");
  assert.equal(png.value.finding, (png.value.probability ?? 0) >= (png.value.threshold ?? 1));
  const dicom = await clinician.readRadiograph({ task: "bone_age", image_base64: image("HAI_DICOM") });
  assert.ok(dicom.ok, JSON.stringify(dicom));
  assert.equal(dicom.value.image.media_type, "application/dicom");
  const burned = await clinician.readRadiograph({ task: "fracture", image_base64: image("HAI_BURNED") });
  assert.ok(!burned.ok);
  assert.equal(burned.error.kind, "image_rejected");
  assert.match(burned.error.detail, /BurnedInAnnotation is YES/);
});

test("a pipeline caller queues a case for review and gets a handle, then pending", async () => {
  const handle = await pipeline.submitForReview({ case_id: "ts-5", age_months: 24, observations: "Walks; few words." });
  assert.ok(handle.ok, JSON.stringify(handle));
  assert.equal(handle.value.status, "pending");
  const result = await pipeline.reviewedResult(handle.value.review_id);
  assert.ok(result.ok && result.value.status === "pending");
  const unknown = await pipeline.reviewedResult("no-such-review");
  assert.ok(!unknown.ok && unknown.error.kind === "not_found");
});

test("a cancelled call is an aborted value, not an exception", async () => {
  const controller = new AbortController();
  controller.abort();
  const out = await clinician.readRadiograph({ task: "rop", image_base64: image("HAI_PNG") }, { signal: controller.signal });
  assert.ok(!out.ok && out.error.kind === "aborted");
});
