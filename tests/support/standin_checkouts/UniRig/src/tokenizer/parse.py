"""TEST STAND-IN for UniRig's tokenizer factory (upstream src/tokenizer/parse.py ``get_tokenizer``, building
src/tokenizer/tokenizer_part.py ``TokenizerPart``): computes nothing real.

The tokenizer has upstream's special-token attributes (``pad``, ``bos``, ``eos``, ``vocab_size``), numbered after
the ``num_discrete`` coordinate tokens; it tokenizes nothing.
"""

from __future__ import annotations

from src.tokenizer.spec import TokenizerConfig


class TokenizerPart:
    def __init__(self, config: TokenizerConfig):
        self.config = config
        self.num_discrete = config.num_discrete
        self.bos, self.eos, self.pad = config.num_discrete, config.num_discrete + 1, config.num_discrete + 2
        self.vocab_size = config.num_discrete + 3 + len(config.cls_token_id) + len(config.parts_token_id)


def get_tokenizer(config: TokenizerConfig) -> TokenizerPart:
    assert config.method == "tokenizer_part", f"expect: [tokenizer_part], found: {config.method}"
    return TokenizerPart(config=config)
