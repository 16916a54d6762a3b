// The server's contracts (skills/contracts.py), as the REST routes return them.

export type ScreeningLabel = "refer" | "monitor" | "on-track";
export type RadiologyTask = "bone_age" | "rop" | "fracture";
export type ImageMediaType = "image/png" | "image/jpeg" | "application/dicom";
export type Backend = "vllm" | "local" | "tflite";

export interface ModelIdentity {
  base: string;
  adapter: string | null;
  release: string | null;
  release_hash: string | null;
  manifest_hash: string | null;
}

/** Every model result: for a clinician to review, never for a patient unreviewed. */
export interface Reviewed {
  requires_clinician_review: true;
  disclaimer: string;
  model: ModelIdentity | null;
  backend: Backend | null;
  audit_id: string;
  guard: string | null;
}

export interface ScreeningRequest {
  case_id: string;
  age_months: number;
  observations: string;
}

export interface ScreeningResult extends Reviewed {
  case_id: string;
  label: ScreeningLabel | null;
  probabilities: Record<string, number> | null;
  rationale: string | null;
  abstained: boolean;
  abstain_reason: string | null;
}

export interface RadiographRequest {
  task: RadiologyTask;
  /** base64 of a PNG, JPEG or DICOM file (DICOM is de-identified by the server before the model sees it) */
  image_base64: string;
  media_type?: ImageMediaType;
}

export interface RadiographResult extends Reviewed {
  task: RadiologyTask;
  bone_age_months: number | null;
  bone_age_interval_months: [number, number] | null;
  probability: number | null;
  threshold: number | null;
  finding: boolean | null;
  answer_text: string | null;
  note: string | null;
  image: { media_type: ImageMediaType; width: number; height: number; sha256: string };
}

export interface ReviewHandle {
  review_id: string;
  status: "pending";
  case_id: string;
}

export interface ReviewedResult {
  review_id: string;
  status: "pending" | "rejected" | "released";
  [field: string]: unknown;
}

export type HaiErrorKind =
  | "unauthorized"
  | "forbidden"
  | "invalid_input"
  | "image_rejected"
  | "request_rejected"
  | "not_found"
  | "payload_too_large"
  | "overloaded"
  | "unavailable"
  | "server_error"
  | "network"
  | "aborted"
  | "unexpected_response";

/** A failure as a value: what went wrong, the HTTP status if there was one, and the server's one-line reason. */
export interface HaiError {
  kind: HaiErrorKind;
  status: number | null;
  detail: string;
  retryAfterS?: number;
}

export type Result<T> = { ok: true; value: T } | { ok: false; error: HaiError };
