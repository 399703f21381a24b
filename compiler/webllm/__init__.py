"""WebLLM interop: mlc-chat-config.json, its conv_template, the sampling kernels."""
