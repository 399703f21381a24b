// Runs a kiln bundle in WebLLM, an independent runtime: proof that the bundle follows WebLLM's
// contract. The page's server maps /webllm/ to @mlc-ai/web-llm's lib folder.
import * as webllm from "/webllm/index.js";

window.webllmChat = async ({ modelUrl, libUrl, messages, maxTokens }) => {
  const modelId = "kiln-test-model";
  const appConfig = { model_list: [{ model: new URL(modelUrl, location.href).href, model_id: modelId,
                                     model_lib: new URL(libUrl, location.href).href }] };
  const progress = [];
  const engine = await webllm.CreateMLCEngine(modelId, {
    appConfig,
    initProgressCallback: (report) => progress.push(report.text),
  });
  const reply = await engine.chat.completions.create({
    messages, temperature: 0, max_tokens: maxTokens, ignore_eos: true,
  });
  await engine.unload();
  return { text: reply.choices[0].message.content, usage: reply.usage, progress: progress.slice(-3) };
};
window.webllmReady = true;
