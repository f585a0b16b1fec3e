"""The main job's data: multi-domain corpora of fixed-size byte documents, and their dataset;
or the blocks of the user's packed token files.

Text becomes bytes (0..255), so there is no tokenizer and nothing is downloaded. One module per
job:

==============  ===============================================================================
module          job
==============  ===============================================================================
``corpus``      :class:`Corpus` (immutable documents with a domain each) and its :class:`Split`
``documents``   text -> fixed-size byte documents; checks of ``seq_len`` and the per-domain cap
``dataset``     :class:`ByteLMDataset`, the torch dataset over some documents of a corpus
``stdlib``      reading CPython's own text into the raw pieces of each built-in domain
``builtin``     :func:`build_corpus`: the built-in, heavily imbalanced corpus (see its page)
``cache``       the on-disk cache of built corpora (:func:`default_cache_dir`, manifest, key)
``user``        :func:`load_user_corpus`, :func:`load_hf_corpus`: a corpus from the user's
                JSONL or Parquet files, or a Hugging Face dataset saved on disk
``tokens``      :class:`TokenCorpus`: the blocks of the user's packed token files (not bytes)
==============  ===============================================================================

Everything other code needs is importable from here.

Example:
    >>> import numpy as np
    >>> from recipes.data import ByteLMDataset, Corpus
    >>> corpus = Corpus.from_texts({"big": "x" * 4000, "small": "hello world! " * 20}, seq_len=16)
    >>> corpus.domain_sizes
    {'big': 250, 'small': 16}
    >>> train, val = corpus.split(val_fraction=0.1, seed=0)
    >>> sorted(set(corpus.domains[val].tolist()))  # every domain is validated
    [0, 1]
    >>> ds = ByteLMDataset(corpus, train).indexed()  # what the reweighter's sampler needs
    >>> sorted(ds[0]), ds[0]["tokens"].shape
    (['domain', 'index', 'tokens'], torch.Size([16]))
"""

from recipes.data.builtin import build_corpus
from recipes.data.cache import default_cache_dir
from recipes.data.corpus import Corpus, Split
from recipes.data.dataset import ByteLMDataset
from recipes.data.stdlib import DOMAINS
from recipes.data.tokens import TokenCorpus
from recipes.data.user import load_hf_corpus, load_user_corpus

#: What the main job trains on: byte documents, or token blocks (the same split interface).
AnyCorpus = Corpus | TokenCorpus

__all__ = [
    "DOMAINS",
    "AnyCorpus",
    "ByteLMDataset",
    "Corpus",
    "Split",
    "TokenCorpus",
    "build_corpus",
    "default_cache_dir",
    "load_hf_corpus",
    "load_user_corpus",
]
