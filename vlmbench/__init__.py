"""vlmbench: evaluate vision-language models and compare their design choices head to head."""

__version__ = "0.1.0"
