import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { GlobalRegistrator } from "@happy-dom/global-registrator";

import { HaiClient } from "../src/index.js";
import type { UseMedGemmaRadiology } from "../src/index.js";
import { clinicianToken, image, url } from "./env.js";

// The client keeps node's fetch (happy-dom's would apply a browser's CORS rules to a server on another origin:
// a browser app is served with the server's http.cors_origins). Then a DOM for react-dom, before React loads.
const client = new HaiClient({ baseUrl: url, token: clinicianToken });
GlobalRegistrator.register({ url: "http://localhost/" });
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
const React = await import("react");
const { createRoot } = await import("react-dom/client");
const { useMedGemmaRadiology } = await import("../src/index.js");

let hook: UseMedGemmaRadiology | null = null;
const seen: Array<{ loading: boolean; error: string | null; result: boolean }> = [];

function Probe(): null {
  hook = useMedGemmaRadiology(client);
  seen.push({ loading: hook.loading, error: hook.error?.kind ?? null, result: hook.result !== null });
  return null;
}

let root: ReturnType<typeof createRoot>;

before(async () => {
  const container = document.createElement("div");
  document.body.appendChild(container);
  root = createRoot(container);
  await React.act(async () => root.render(React.createElement(Probe)));
});

after(async () => {
  await React.act(async () => root.unmount());
  await GlobalRegistrator.unregister();
});

test("loading, then the result", async () => {
  seen.length = 0;
  let read: Promise<unknown> = Promise.resolve();
  await React.act(async () => {
    read = hook!.read({ task: "rop", image_base64: image("HAI_PNG") });
  });
  assert.equal(hook!.loading, true);
  await React.act(async () => {
    await read;
  });
  assert.equal(hook!.loading, false);
  assert.equal(hook!.error, null);
  assert.equal(hook!.result?.task, "rop");
  assert.equal(hook!.result?.requires_clinician_review, true);
  assert.ok(seen.some((s) => s.loading) && seen.at(-1)?.result === true);
});

test("an error is state, typed", async () => {
  await React.act(async () => {
    await hook!.read({ task: "fracture", image_base64: image("HAI_BURNED") });
  });
  assert.equal(hook!.loading, false);
  assert.equal(hook!.result, null);
  assert.equal(hook!.error?.kind, "image_rejected");
});

test("cancel stops the read in flight and leaves no result", async () => {
  let read: Promise<unknown> = Promise.resolve();
  await React.act(async () => {
    read = hook!.read({ task: "bone_age", image_base64: image("HAI_DICOM") });
  });
  assert.equal(hook!.loading, true);
  await React.act(async () => {
    hook!.cancel();
  });
  let resolved: unknown;
  await React.act(async () => {
    resolved = await read;
  });
  assert.equal(resolved, null);
  assert.equal(hook!.loading, false);
  assert.equal(hook!.result, null);
  assert.equal(hook!.error, null);
});
