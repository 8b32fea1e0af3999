"""Bridges to other evaluation harnesses. Nothing here is imported by `vlmbench` itself, and no optional
harness (lmms-eval) is needed to import these modules: each import of such a package is guarded."""
