// Chat settings (system prompt, sampling, backend), kept in localStorage on this device.

export interface Settings {
  system: string;
  temperature: number;
  top_p: number;
  max_tokens: number;
  backend: "auto" | "webgpu" | "wasm";
  modelId: string;
}

export const SETTINGS_KEY = "kiln-demo-settings";

export const DEFAULTS: Settings = {
  system: "You are a helpful assistant.",
  temperature: 0.7,
  top_p: 0.95,
  max_tokens: 256,
  backend: "auto",
  modelId: "",
};

const clamp = (v: unknown, lo: number, hi: number, fallback: number) => {
  const n = typeof v === "number" ? v : Number(v);
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : fallback;
};

/** Settings made safe to send: numbers in range, known backend, strings. */
export function sanitize(raw: Partial<Record<keyof Settings, unknown>>): Settings {
  const backend = raw.backend === "webgpu" || raw.backend === "wasm" ? raw.backend : "auto";
  return {
    system: typeof raw.system === "string" ? raw.system : DEFAULTS.system,
    temperature: clamp(raw.temperature, 0, 2, DEFAULTS.temperature),
    top_p: clamp(raw.top_p, 0.01, 1, DEFAULTS.top_p),
    max_tokens: Math.round(clamp(raw.max_tokens, 1, 1 << 20, DEFAULTS.max_tokens)),
    backend,
    modelId: typeof raw.modelId === "string" ? raw.modelId : "",
  };
}

export function loadSettings(): Settings {
  try {
    return sanitize(JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? "{}"));
  } catch {
    return { ...DEFAULTS };
  }
}

export function saveSettings(s: Settings): void {
  try {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(s));
  } catch {
    // storage refused (private mode, quota): settings then last for this page only
  }
}
