export { HaiClient } from "./client.js";
export type { CallOptions, ClientOptions } from "./client.js";
export * from "./types.js";
export { useMedGemmaRadiology } from "./useMedGemmaRadiology.js";
export type { RadiologyState, UseMedGemmaRadiology } from "./useMedGemmaRadiology.js";
