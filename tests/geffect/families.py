"""Tiny random configs of the causal-LM families unlearning research runs on (issue 13).

Two blocks, hidden size 16, a vocabulary that holds the test batches' byte ids (259 + 1),
2-4 heads, 3 experts for the mixture-of-experts families; dropout off, eager attention.
"""
from __future__ import annotations

import torch
import transformers as tf

V = dict(vocab_size=260, pad_token_id=256, bos_token_id=257, eos_token_id=258)
LLAMA_LIKE = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, **V)
GPT_LIKE = dict(n_embd=16, n_layer=2, n_head=2, n_positions=64, **V)
MOE = dict(num_experts_per_tok=2)

FAMILIES = {
    "llama": (tf.LlamaConfig, dict(LLAMA_LIKE, tie_word_embeddings=True)),   # GQA, tied
    "mistral": (tf.MistralConfig, dict(LLAMA_LIKE, sliding_window=None)),
    "mixtral": (tf.MixtralConfig, dict(LLAMA_LIKE, num_local_experts=3, **MOE)),
    "qwen2": (tf.Qwen2Config, dict(LLAMA_LIKE, tie_word_embeddings=True)),
    "qwen2_moe": (tf.Qwen2MoeConfig, dict(LLAMA_LIKE, num_experts=3, moe_intermediate_size=8,
                                          shared_expert_intermediate_size=8, **MOE)),
    "qwen3": (tf.Qwen3Config, dict(LLAMA_LIKE, head_dim=8, tie_word_embeddings=True)),
    "qwen3_moe": (tf.Qwen3MoeConfig, dict(LLAMA_LIKE, head_dim=8, num_experts=3,
                                          moe_intermediate_size=8, **MOE)),
    "gemma": (tf.GemmaConfig, dict(LLAMA_LIKE, head_dim=8)),
    "gemma2": (tf.Gemma2Config, dict(LLAMA_LIKE, head_dim=8, query_pre_attn_scalar=8)),
    "gemma3_text": (tf.Gemma3TextConfig, dict(LLAMA_LIKE, head_dim=8, query_pre_attn_scalar=8,
                                              sliding_window=4)),
    "phi": (tf.PhiConfig, dict(LLAMA_LIKE, resid_pdrop=0.0, embd_pdrop=0.0)),
    "phi3": (tf.Phi3Config, dict(LLAMA_LIKE)),
    "gpt_neox": (tf.GPTNeoXConfig, dict(LLAMA_LIKE, num_attention_heads=2)),
    "opt": (tf.OPTConfig, dict(hidden_size=16, ffn_dim=32, num_hidden_layers=2,
                               num_attention_heads=2, word_embed_proj_dim=16,
                               max_position_embeddings=64, dropout=0.0, **V)),
    "falcon": (tf.FalconConfig, dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     hidden_dropout=0.0, attention_dropout=0.0, **V)),
    "bloom": (tf.BloomConfig, dict(hidden_size=16, n_layer=2, n_head=2, **V)),
    "gpt2": (tf.GPT2Config, dict(GPT_LIKE, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "gpt_bigcode": (tf.GPTBigCodeConfig, dict(GPT_LIKE, resid_pdrop=0.0, embd_pdrop=0.0,
                                              attn_pdrop=0.0)),
    "gptj": (tf.GPTJConfig, dict(GPT_LIKE, rotary_dim=4, resid_pdrop=0.0, embd_pdrop=0.0,
                                 attn_pdrop=0.0)),
    "stablelm": (tf.StableLmConfig, dict(LLAMA_LIKE)),
    "olmo": (tf.OlmoConfig, dict(LLAMA_LIKE)),
    "olmo2": (tf.Olmo2Config, dict(LLAMA_LIKE)),
}


def family_model(name: str, *, seed: int = 0, dtype: torch.dtype = torch.float64,
                 attn: str = "sdpa"):
    """A tiny random model of family `name` (a key of FAMILIES), eager attention, eval mode."""
    cls, kw = FAMILIES[name]
    torch.manual_seed(seed)
    cfg = cls(**kw)
    extra = {"experts_implementation": "eager"} if hasattr(cfg, "_experts_implementation") else {}
    model = tf.AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, **extra)
    with torch.no_grad():                  # norms start at 1 (Gemma's at 0): make them count
        for n, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.to(dtype).eval()
