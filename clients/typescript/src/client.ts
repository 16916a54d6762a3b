// A typed client for the REST routes of `mcp_server.py --http`: a bearer token per caller, results and errors
// as values (never thrown), cancellation with an AbortSignal.
import type {
  HaiError,
  HaiErrorKind,
  RadiographRequest,
  RadiographResult,
  Result,
  ReviewedResult,
  ReviewHandle,
  ScreeningRequest,
  ScreeningResult,
} from "./types.js";

export interface ClientOptions {
  /** the server's base URL, e.g. http://127.0.0.1:8765 */
  baseUrl: string;
  /** the caller's bearer token (from the callers registry); sent as `Authorization: Bearer ...` */
  token: string;
  /** a fetch implementation (default: the global one) */
  fetch?: typeof fetch;
}

export interface CallOptions {
  signal?: AbortSignal;
}

const KIND_BY_STATUS: Record<number, HaiErrorKind> = {
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  413: "payload_too_large",
  422: "invalid_input",
  429: "overloaded",
  503: "unavailable",
};

const KIND_BY_BODY: Record<string, HaiErrorKind> = {
  invalid_input: "invalid_input",
  image_rejected: "image_rejected",
  request_rejected: "request_rejected",
  not_found: "not_found",
  overloaded: "overloaded",
};

export class HaiClient {
  private readonly baseUrl: string;
  private readonly token: string;
  private readonly fetchImpl: typeof fetch;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.token = options.token;
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** The original screening call: refer / monitor / on-track with a rationale, for clinician review. */
  screen(request: ScreeningRequest, options: CallOptions = {}): Promise<Result<ScreeningResult>> {
    return this.call<ScreeningResult>("POST", "/infer_text", request, options);
  }

  /** One radiograph read for a task (bone age, ROP, fracture), for clinician review. */
  readRadiograph(request: RadiographRequest, options: CallOptions = {}): Promise<Result<RadiographResult>> {
    return this.call<RadiographResult>("POST", "/infer_image", request, options);
  }

  /** Queue a screening case for a clinician; the handle carries no model text. */
  submitForReview(case_: ScreeningRequest & { question?: string }, options: CallOptions = {}) {
    return this.call<ReviewHandle>("POST", "/review", case_, options);
  }

  /** pending, rejected, or released with the text a clinician approved. */
  reviewedResult(reviewId: string, options: CallOptions = {}): Promise<Result<ReviewedResult>> {
    return this.call<ReviewedResult>("GET", `/review/${encodeURIComponent(reviewId)}`, undefined, options);
  }

  private async call<T>(method: string, path: string, body: unknown, options: CallOptions): Promise<Result<T>> {
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.baseUrl}${path}`, {
        method,
        headers: {
          Authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: options.signal,
      });
    } catch (cause) {
      const aborted = options.signal?.aborted === true;
      return failure(aborted ? "aborted" : "network", null, aborted ? "cancelled" : describe(cause));
    }
    let payload: unknown;
    try {
      payload = await response.json();
    } catch (cause) {
      if (options.signal?.aborted === true) return failure("aborted", response.status, "cancelled");
      return failure(response.ok ? "unexpected_response" : kindOf(response.status, undefined), response.status,
        `HTTP ${response.status} without a JSON body`);
    }
    if (response.ok) return { ok: true, value: payload as T };
    const errorBody = (payload ?? {}) as { error?: string; detail?: string };
    const error: HaiError = {
      kind: kindOf(response.status, errorBody.error),
      status: response.status,
      detail: String(errorBody.detail ?? errorBody.error ?? `HTTP ${response.status}`),
    };
    const retry = response.headers.get("Retry-After");
    if (retry !== null && !Number.isNaN(Number(retry))) error.retryAfterS = Number(retry);
    return { ok: false, error };
  }
}

function kindOf(status: number, bodyKind: string | undefined): HaiErrorKind {
  if (bodyKind !== undefined && bodyKind in KIND_BY_BODY) return KIND_BY_BODY[bodyKind] as HaiErrorKind;
  return KIND_BY_STATUS[status] ?? (status >= 500 ? "server_error" : "unexpected_response");
}

function failure(kind: HaiErrorKind, status: number | null, detail: string): { ok: false; error: HaiError } {
  return { ok: false, error: { kind, status, detail } };
}

function describe(cause: unknown): string {
  return cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
}
