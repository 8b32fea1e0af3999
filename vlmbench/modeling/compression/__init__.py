"""Visual-token compression at inference time (`--visual-tokens SPEC`); see docs/compression.md.

- `spec`: the SPEC grammar, parsed and checked before anything is loaded;
- `tokens`: the operators on one image's visual tokens (pool, ToMe, random, top-k by score);
- `attention`: the attention maps attention pruning ranks tokens by (vision CLS token, LLM layer L);
- `own`: how vlmbench's own `VLM` applies a spec; `hf_apply`: the transformers adapter's.
"""
