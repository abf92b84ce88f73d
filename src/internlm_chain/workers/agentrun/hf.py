"""A local Hugging Face model loaded in-process through Lagent's HF wrapper.

Lagent 0.2.4's `HFTransformerCasualLM` moves inputs to CUDA unconditionally and drives generation with
private transformers helpers that newer releases removed; we keep its loading and prompt templating and
generate with `model.generate` on whatever device the model sits on: the GPU when the runtime's torch sees
one (the agent CUDA lock), else the CPU.
"""

from __future__ import annotations

import time
from typing import Any

from .errors import SpecError
from .urls import cut_at_stop


def load_hf_model(path: str, *, meta_template: Any, recorder: Any, max_new_tokens: int, temperature: float,
                  top_p: float, stop_words: list[str]):
    try:
        import torch
        from lagent.llms import HFTransformerCasualLM
    except ImportError as exc:
        raise SpecError(f"llm.hf_model needs torch and transformers in the agent runtime ({exc})") from None

    class LocalHF(HFTransformerCasualLM):
        def _load_model(self, path: str, model_kwargs: dict):
            from transformers import AutoModelForCausalLM

            model_kwargs.setdefault("torch_dtype", "auto" if torch.cuda.is_available() else torch.float32)
            self.model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
            if torch.cuda.is_available():  # `device_map` would need accelerate, which the runtime does not carry
                self.model.to("cuda")
            self.model.eval()

        def stream_generate(self, inputs, do_sample: bool = False, **kwargs):
            text = self.generate(inputs, do_sample=do_sample, **kwargs)
            yield 0, text, None

        def generate(self, inputs, do_sample: bool = False, **kwargs):
            if isinstance(inputs, list):
                return [self.generate(i, do_sample=do_sample, **kwargs) for i in inputs]
            params = self.update_gen_params(**kwargs)
            started = time.monotonic()
            enc = self.tokenizer(inputs, return_tensors="pt").to(self.model.device)
            sample = do_sample or (params.get("temperature") or 0) > 0
            gen = dict(max_new_tokens=params["max_new_tokens"], do_sample=sample,
                       pad_token_id=self.tokenizer.pad_token_id)
            if sample:
                gen.update(temperature=params["temperature"], top_p=params["top_p"])
            with torch.no_grad():
                out = self.model.generate(**enc, **gen)
            text = self.tokenizer.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=False)
            text, _ = cut_at_stop(text, params.get("stop_words"))
            if self.tokenizer.eos_token:
                text = text.split(self.tokenizer.eos_token)[0]
            if self.recorder is not None:
                self.recorder.llm([{"role": "prompt", "content": inputs}], text, time.monotonic() - started)
            return text

    model = LocalHF(path=path, meta_template=meta_template, model_kwargs={}, max_new_tokens=max_new_tokens,
                    temperature=temperature, top_p=top_p, stop_words=stop_words)
    model.recorder = recorder  # swapped per question by the session
    return model
