"""Model utilities outside a chain, one plain function per `ichain model` verb (LitGPT style):

    from internlm_chain.models import download, inspect_model, merge, convert, chat

`inspect_model` reads JSON and safetensors headers in this process; the others run their upstream code
(huggingface_hub, transformers, peft, XTuner) as Jobs in the xtuner runtime and never import it here.
"""

from internlm_chain.models.chat import chat
from internlm_chain.models.convert import convert
from internlm_chain.models.download import download
from internlm_chain.models.inspect_model import inspect_model
from internlm_chain.models.merge import merge

__all__ = ["chat", "convert", "download", "inspect_model", "merge"]
