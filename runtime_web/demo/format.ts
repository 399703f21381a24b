// Text for the UI: sizes, load progress, backend needs, speeds. Pure functions (node:test checks them).

import type { LoadProgress, SiteModel } from "./kiln.mjs";

// models.json's entries: generated from compiler/schema/site-models.schema.json (what site.py writes).
export type { SiteModel };

const PHASES: Record<LoadProgress["phase"], string> = {
  download: "Downloading weights",
  verify: "Verifying",
  compile: "Compiling GPU shaders",
  upload: "Loading into the backend",
};

/** Megabytes (10^6 bytes, as the loader's MB/s), one decimal below 100 MB. */
export function formatMB(bytes: number): string {
  const mb = bytes / 1e6;
  return `${mb < 100 ? mb.toFixed(1) : Math.round(mb).toString()} MB`;
}

export function formatDuration(seconds: number): string {
  if (seconds < 1) return "<1 s";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  return m < 60 ? `${m} min ${s} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function percent(p: Pick<LoadProgress, "bytesDone" | "bytesTotal">): number {
  return p.bytesTotal > 0 ? Math.floor((100 * p.bytesDone) / p.bytesTotal) : 100;
}

/** "Downloading weights · 12.3 / 45.6 MB · 27 % · 3.2 MB/s · 10 s left" */
export function describeProgress(p: LoadProgress): string {
  // "compile" counts pipelines, not bytes.
  const amount = p.phase === "compile" ? `${p.bytesDone} / ${p.bytesTotal}` : `${formatMB(p.bytesDone)} / ${formatMB(p.bytesTotal)}`;
  const parts = [PHASES[p.phase] ?? p.phase, amount, `${percent(p)} %`];
  if (p.mbPerSecond > 0) parts.push(`${p.mbPerSecond.toFixed(p.mbPerSecond < 1 ? 2 : 1)} MB/s`);
  if (p.bytesDone < p.bytesTotal) parts.push(p.etaSeconds === null ? "estimating time left" : `${formatDuration(p.etaSeconds)} left`);
  return parts.join(" · ");
}

/** What a model needs to run: "WebGPU or WASM", "WebGPU with shader-f16 or WASM", "WASM". */
export function backendNeeds(model: Pick<SiteModel, "backends" | "webgpu_features">): string {
  const options: string[] = [];
  if (model.backends.includes("webgpu")) {
    const features = model.webgpu_features ?? [];
    options.push(features.length ? `WebGPU with ${features.join(", ")}` : "WebGPU");
  }
  if (model.backends.includes("wasm")) options.push("WASM");
  return options.length ? options.join(" or ") : "no backend";
}

export function formatParams(count: number): string {
  if (count >= 1e9) return `${(count / 1e9).toFixed(1)}B params`;
  if (count >= 1e6) return `${(count / 1e6).toFixed(count >= 1e8 ? 0 : 1)}M params`;
  if (count >= 1e3) return `${(count / 1e3).toFixed(0)}K params`;
  return `${count} params`;
}

/** The line under the picker: "8.1 MB · q4f32_1 · 115K params · runs on WebGPU or WASM · 512-token context". */
export function describeModel(model: SiteModel): string {
  return [formatMB(model.bytes), model.quantization, formatParams(model.params), `runs on ${backendNeeds(model)}`,
          `${model.context_window}-token context`, ...(model.license ? [`license ${model.license}`] : [])].join(" · ");
}

export function backendLabel(backend: string, threads = 1): string {
  const name = backend === "webgpu" ? "WebGPU" : backend === "wasm" ? "WASM" : backend;
  return threads > 1 ? `${name}, ${threads} threads` : name;
}

export function formatRate(tokensPerSecond: number | null | undefined): string {
  if (tokensPerSecond == null || !Number.isFinite(tokensPerSecond)) return "–";
  return tokensPerSecond >= 100 ? Math.round(tokensPerSecond).toString() : tokensPerSecond.toFixed(1);
}

/** A conversation's title from its first user message. */
export function titleFrom(text: string): string {
  const line = text.trim().split("\n")[0].replace(/\s+/g, " ");
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || "New chat";
}
