"""ReweightSampler: a two-level (domain → item) sampler whose weights can change every step.

The sampling distribution over items i = 0..N-1 with domains d(i) is

    q(i) = π(d) · a_i · b_i / Σ_{j ∈ d} a_j · b_j

with π the domain probabilities (each domain receives exactly π(d) of the draws in
expectation, whatever the item factors are), a the static factor and b the dynamic factor.

How it stays fast past 2^24 items (where ``torch.multinomial`` stops):

* Items are laid out domain by domain in *positions*, each domain padded to whole blocks of
  ``block_size`` items (padding slots have weight 0). When the dataset's domain ids are already
  non-decreasing (a concatenation of per-domain data sets, the common case) the layout is implicit;
  otherwise it keeps a permutation (positions → items, 4 bytes per item), a compact domain id
  per item and the low bits of each item's rank within its domain (items → positions; the high
  bits come from a small per-domain table).
* Per-block sums sit at the bottom of a float64 sum pyramid. A draw picks its domain from π, then
  descends the pyramid to the target mass ``prefix(domain start) + u · mass(domain)`` and finishes
  inside one block: O(log N) per draw, compiled and run over a whole batch of draws. A domain
  far lighter than the mass before it (where that sum would round) is drawn by an exact walk
  over the pyramid nodes inside the domain, still O(block_size · log N).
* An update rewrites the touched items, recomputes their blocks, and recomputes the pyramid nodes
  above them from their children (no accumulated floating-point drift): O(log N) per item.
* Draws are made on demand by :class:`reweight.sampler.stream.DrawStream`: position p of one global
  sequence is drawn from uniforms that are a pure function of (seed, p), with the weights in
  force when the DataLoader asks for it. Any change of the weights reaches every draw not yet
  handed out; each draw remembers its probability q; a saved state continues exactly.

Memory per item (:meth:`ReweightSampler.memory_bytes`): static and dynamic factor (float32,
8 bytes), about ``8.6 / block_size`` bytes of sum pyramid and its running sums, ``25 /
block_size²`` bytes of cached statistics, plus, for a non-contiguous domain layout, 4 bytes of
permutation (8 past 2^31 items), a domain id and the low bits of a rank (3 bytes together for
up to 65,536 domains, 5 beyond). With the default block size that is about 8.6 bytes per item
for a contiguous layout and 15.7 for an interleaved one.

Modules: :mod:`~reweight.sampler.sampler` (:class:`ReweightSampler`, the ``DistributedSampler``
that composes the other two), :mod:`~reweight.sampler.tree` (the weights: layout, pyramid, π,
draws from given uniforms), :mod:`~reweight.sampler.stream` (the global draw sequence: epochs,
ranks, replay, records, state) and ``_kernels`` (their compiled loops, called with the named
structures ``Layout``, ``Pyramid`` and ``Domains``).
"""

from reweight.sampler.sampler import ReweightSampler
from reweight.sampler.stream import DrawMatch, DrawStream

__all__ = ["DrawMatch", "DrawStream", "ReweightSampler"]
