"""internlm-chain: the InternLM toolchain as one validated, resumable chain."""

__version__ = "0.1.0"
