"""Reuse of a decoder block's intermediate results across the pipeline's repeated forwards.

True-sequential GPTQ runs a block once per group of layers — for Llama ``{q,k,v}``, ``{o}``,
``{gate,up}``, ``{down}`` — and once more for the block's outputs. Run naively that is 20 linear
products per token per block (0 + 3 + 4 + 6 + 7) and four attention computations, where 7 and 2
suffice: once a layer is quantized its weight no longer changes within the block, so everything
computed from frozen layers alone comes out the same in every later forward.

The rule, with no per-architecture table: the output of a submodule ``M`` on calibration batch
``b`` is a function of the block's input for ``b`` and of the weights of the linear layers the
forward has called by the time ``M`` returns (``deps(M)``, found by one traced forward; the
forward is deterministic and in eval mode). When every layer in ``deps(M)`` is frozen, ``M``'s
output is kept and handed back in later forwards instead of recomputed — bit for bit the value
the computation would give. Kept outputs modified in place later (a tensor's ``_version``
moved) are recomputed instead. A submodule's kept output replaces those of its children, and
everything is dropped when the block is done.
"""

from __future__ import annotations

__all__ = ["OutputReuse"]


def _tensors(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


class OutputReuse:
    """Context manager over one block: wraps the ``forward`` of every submodule holding linears.

    ``linears`` maps names to the block's linear layers; ``forward(batch)`` is called with the
    batch index before each forward of the block (:meth:`start`), and :meth:`freeze` is called
    with a layer's name once its weight is final. ``trace_forward`` runs the block once (on any
    batch) to learn the call order.
    """

    def __init__(self, block, linears: dict, trace_forward, enabled: bool = True):
        self.block = block
        self.linears = linears
        self.enabled = enabled
        self.frozen: set[str] = set()
        self.hits = 0
        self.misses = 0
        self._cache: dict = {}  # (module name, batch, call index) -> (output, tensor versions)
        self._batch = None
        self._calls: dict[str, int] = {}
        self._deps: dict[str, frozenset] = {}
        self._children: dict[str, list[str]] = {}
        self._trace_forward = trace_forward
        self._wrapped: list = []

    # -- set-up ------------------------------------------------------------------------------
    def _candidates(self) -> dict:
        """Submodules of the block that hold (or are) a linear layer, by name."""
        lin_ids = {id(m) for m in self.linears.values()}
        out = {}
        for name, mod in self.block.named_modules():
            if name and any(id(m) in lin_ids for m in mod.modules()):
                out[name] = mod
        return out

    def _trace(self, mods: dict) -> None:
        """One forward: for each candidate, the linears called by the time it first returns."""
        lin_names = {id(m): n for n, m in self.linears.items()}
        called: list[str] = []
        handles = []
        for name, mod in self.linears.items():
            handles.append(mod.register_forward_pre_hook(
                lambda m, inp, _n=name: called.append(_n) if _n not in called else None))
        for name, mod in mods.items():
            def post(m, inp, out, _n=name):
                if _n not in self._deps:
                    self._deps[_n] = frozenset(called) | {lin_names[id(x)] for x in m.modules()
                                                          if id(x) in lin_names}
            handles.append(mod.register_forward_hook(post))
        try:
            self._trace_forward()
        finally:
            for h in handles:
                h.remove()
        for name in mods:
            self._deps.setdefault(name, frozenset(self.linears))  # never called: never reused
            self._children[name] = [c for c in mods if c.startswith(name + ".")]

    def __enter__(self):
        if not self.enabled:
            return self
        mods = self._candidates()
        self._trace(mods)
        for name, mod in mods.items():
            mod.forward = self._wrap(name, mod.forward)
            self._wrapped.append(mod)
        return self

    def __exit__(self, *exc):
        for mod in self._wrapped:
            del mod.forward  # the class's forward again
        self._wrapped.clear()
        self._cache.clear()
        return False

    # -- use -----------------------------------------------------------------------------------
    def start(self, batch: int) -> None:
        """The next forward of the block is on calibration batch ``batch``."""
        self._batch = batch
        self._calls.clear()

    def freeze(self, name: str) -> None:
        """Layer ``name`` has its final (quantized) weight for the rest of the block."""
        self.frozen.add(name)

    def _wrap(self, name, forward):
        def wrapped(*args, **kwargs):
            if self._batch is None:
                return forward(*args, **kwargs)
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            key = (name, self._batch, call)
            hit = self._cache.get(key)
            if hit is not None:
                out, versions = hit
                if all(t._version == v for t, v in zip(_tensors(out), versions)):
                    self.hits += 1
                    return out
                del self._cache[key]
            self.misses += 1
            out = forward(*args, **kwargs)
            if self._deps[name] <= self.frozen:
                self._cache[key] = (out, [t._version for t in _tensors(out)])
                for child in self._children[name]:
                    for c in range(max(1, self._calls.get(child, 0))):
                        self._cache.pop((child, self._batch, c), None)
            return out
        return wrapped
