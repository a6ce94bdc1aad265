"""HF's DeepSeek classes with every layer dense: their attention (MLA) alone, for tests."""

from transformers import DeepseekV2ForCausalLM, DeepseekV3ForCausalLM


class DenseDeepseekV2ForCausalLM(DeepseekV2ForCausalLM):
    def __init__(self, config):
        config.first_k_dense_replace = config.num_hidden_layers
        super().__init__(config)


class DenseDeepseekV3ForCausalLM(DeepseekV3ForCausalLM):
    def __init__(self, config):
        config.first_k_dense_replace = config.num_hidden_layers
        super().__init__(config)
