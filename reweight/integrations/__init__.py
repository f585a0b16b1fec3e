"""Adapters for trainers other than Lightning, each an optional extra.

* :mod:`reweight.integrations.huggingface` — ``ReweightTrainer`` for the Hugging Face
  ``transformers.Trainer`` (``pip install 'reweight[hf]'``).

Nothing is imported here: ``import reweight.integrations`` does not import ``transformers``.
"""
