# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
# LayerNorm has to exist before .gpt_model is imported: transformer.py does
# "from megatron.model import LayerNorm" while this package is half-loaded.
from deepspeed.accelerator.real_accelerator import get_accelerator
if get_accelerator().device_name() == 'cuda':
    from .fused_layer_norm import MixedFusedLayerNorm as LayerNorm
else:
    from torch.nn import LayerNorm
from .rmsnorm import RMSNorm
from .gpt_model import GPTModel, GPTModelPipe
from .phi3_5_model import Phi3_5Model, Phi3_5ModelPipe
from .language_model import get_language_model
from .module import Float16Module
