// What the Python test that started the server passes (tests/test_typescript_client.py).
import { readFileSync } from "node:fs";

function need(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is not set: run through tests/test_typescript_client.py`);
  return value;
}

export const url = need("HAI_URL");
export const clinicianToken = need("HAI_CLINICIAN_TOKEN");
export const pipelineToken = need("HAI_PIPELINE_TOKEN");
export const image = (name: "HAI_PNG" | "HAI_DICOM" | "HAI_BURNED"): string =>
  readFileSync(need(name)).toString("base64");
