"""charrnn: recurrent language models on plain text, at char, word and subword level."""

__version__ = "0.1.0"
