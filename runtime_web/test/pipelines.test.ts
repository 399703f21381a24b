import { test } from "node:test";
import assert from "node:assert/strict";

import { deferredKernel } from "../src/pipelines";

test("deferred pipelines: what a first reply never calls waits, what it calls does not", () => {
  // Kernel names as in a SmolLM2 library's shader table.
  for (const name of ["fused_matmul_nt1_add1_kernel", "rms_norm_kernel", "batch_decode_paged_kv_kernel",
                      "batch_prefill_ragged_kv_kernel", "tir_kv_cache_transpose_append_kernel", "take_rows_kernel",
                      "kiln_sampling_softmax_with_temperature_kernel"]) {
    assert.equal(deferredKernel(name, false), false, name);
  }
  for (const name of ["batch_tree_attn_kernel", "tree_attn_paged_kv_kernel", "tir_kv_cache_transpose_append_mla_kernel",
                      "tir_kv_cache_debug_get_kv_kernel", "compact_kv_copy_kernel", "copy_single_page_kernel",
                      "kiln_sampling_argsort_probs_kernel_30", "kiln_sampling_apply_penalty_inplace_kernel",
                      "batch_decode_paged_kv_sliding_window_kernel", "batch_prefill_paged_kv_kernel",
                      "tir_attention_merge_state_kernel"]) {
    assert.equal(deferredKernel(name, false), true, name);
  }
  // A model with a sliding window calls the window's kernels.
  assert.equal(deferredKernel("batch_decode_paged_kv_sliding_window_kernel", true), false);
});
