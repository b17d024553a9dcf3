"""Writers for the formats serving engines load (``vllm``: Medusa form for residual heads)."""
