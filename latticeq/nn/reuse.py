"""A decoder block's forward, traced once and then run without repeating finished work.

True-sequential GPTQ runs a block once per group of layers — for Llama ``{q,k,v}``, ``{o}``,
``{gate,up}``, ``{down}`` — and once more for the block's outputs. Run naively that is 20 linear
products per token per block (0 + 3 + 4 + 6 + 7), four attention computations and eight norms,
where 7, 1 and 2 suffice: once a layer is quantized its weight no longer changes within the
block, so everything computed from frozen layers alone comes out the same in every later forward.

:func:`trace_block` runs the block once and records, with no per-architecture table:

* the **groups**: linear layers that read the same input tensor, in call order;
* for every submodule ``M``, ``deps(M)``: the linear layers called by the time ``M`` returns.
  ``M``'s output on calibration batch ``b`` is a function of the block's input for ``b`` and of
  those layers' weights (the forward is deterministic, in eval mode);
* **tails**: submodules that return the output of the last linear layer they call (Llama's
  attention returns ``o_proj``'s output, its MLP ``down_proj``'s).

:class:`OutputReuse` then wraps every submodule's ``forward``. When all of ``deps(M)`` are frozen,
``M``'s output is kept and handed back in later forwards instead of recomputed — bit for bit the
value the computation would give. A tail ``M`` whose own last layer has just been frozen is
computed from that layer's kept input (recorded when everything before it was frozen): the
attention after ``o_proj`` is quantized costs one product, not a second attention. Kept tensors
modified in place later (``_version`` moved) are recomputed instead; a module's kept output
replaces its children's; everything is dropped when the block is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BlockTrace", "trace_block", "OutputReuse"]


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


@dataclass
class BlockTrace:
    """What one traced forward of a block shows (see the module docstring)."""

    groups: list  # [[linear name, …], …] by shared input, in call order
    deps: dict  # submodule name -> frozenset of linear names
    tails: dict = field(default_factory=dict)  # submodule name -> (linear name, tuple length or 0)
    children: dict = field(default_factory=dict)  # submodule name -> [descendant names]


def trace_block(block, linears: dict, forward) -> BlockTrace:
    """Run ``forward()`` (one forward of ``block``) once with hooks; see :class:`BlockTrace`.

    ``linears`` maps names to the block's linear layers (``nn.Linear``, GPT-2's ``Conv1D``)."""
    import torch

    mods = {name: mod for name, mod in block.named_modules() if name}
    lin_name = {id(m): n for n, m in linears.items()}
    seen: list = []  # (input tensor, names); tensors kept alive so addresses are not reused
    called: list[str] = []
    last_out: dict[str, object] = {}
    ncalls: dict[str, int] = {}
    deps: dict[str, frozenset] = {}
    tails: dict[str, tuple] = {}
    handles = []

    def pre(name):  # on the linear layers: call order and shared inputs
        def hook(mod, inputs):
            x = inputs[0]
            if name not in called:
                called.append(name)
            for t, names in seen:
                if t is x or (t.data_ptr() == x.data_ptr() and t.shape == x.shape and t.stride() == x.stride()):
                    if name not in names:
                        names.append(name)
                    break
            else:
                seen.append((x, [name]))
        return hook

    def post(name):
        def hook(mod, inputs, out):
            ncalls[name] = ncalls.get(name, 0) + 1
            if name in linears:
                last_out[name] = out
            if name in deps:
                return
            own = {lin_name[id(x)] for x in mod.modules() if id(x) in lin_name}
            deps[name] = frozenset(called) | own
            inner = [n for n in called if n in own]
            t = out if isinstance(out, torch.Tensor) else (
                out[0] if isinstance(out, tuple) and out and all(o is None for o in out[1:]) else None)
            if name not in linears and inner and t is not None and last_out.get(inner[-1]) is t:
                tails[name] = (inner[-1], 0 if isinstance(out, torch.Tensor) else len(out))
        return hook

    for name, mod in linears.items():
        handles.append(mod.register_forward_pre_hook(pre(name)))
    for name, mod in mods.items():
        handles.append(mod.register_forward_hook(post(name)))
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
    # a tail must run its last layer exactly once per call
    tails = {m: t for m, t in tails.items() if ncalls.get(t[0]) == ncalls.get(m)}
    groups = [names for _, names in seen]
    groups += [[n] for n in linears if not any(n in g for g in groups)]  # never called: last, alone
    for name in mods:
        deps.setdefault(name, frozenset(linears))  # never called: never reused
    children = {name: [c for c in mods if c.startswith(name + ".")] for name in mods}
    return BlockTrace(groups, deps, tails, children)


class OutputReuse:
    """Context manager over one block: wraps the ``forward`` of every submodule.

    Before each forward of the block call :meth:`start` with the calibration batch's index; call
    :meth:`freeze` with a layer's name once its weight is final for the rest of the block.
    ``enabled=False`` wraps nothing (every forward computes everything).
    """

    def __init__(self, block, linears: dict, trace: BlockTrace, enabled: bool = True):
        self.block = block
        self.linears = dict(linears)  # name -> the module now in the block (see freeze)
        self.trace = trace
        self.enabled = enabled
        self.frozen: set[str] = set()
        self.hits = 0
        self._cache: dict = {}  # (module name, batch, call index) -> (output, tensor versions)
        self._inputs: dict = {}  # (tail layer name, batch, call index) -> input
        self._batch = None
        self._calls: dict[str, int] = {}
        self._before: dict[str, frozenset] = {}  # tail layer -> layers called before it
        self._wrapped: list = []
        self._handles: list = []

    def __enter__(self):
        if not self.enabled:
            return self
        mods = {name: mod for name, mod in self.block.named_modules() if name}
        for m, (lin, _) in self.trace.tails.items():
            self._before[lin] = self.trace.deps[m] - {lin}
        for name, mod in mods.items():
            mod.forward = self._wrap(name, mod.forward)
            self._wrapped.append(mod)
        # registered before any Hessian hook, so an input is kept even when that hook stops the forward
        for lin in self._before:
            self._handles.append(self.linears[lin].register_forward_pre_hook(self._keep_input(lin)))
        return self

    def __exit__(self, *exc):
        for mod in self._wrapped:
            del mod.forward  # the class's forward again
        for h in self._handles:
            h.remove()
        self._wrapped.clear()
        self._handles.clear()
        self._cache.clear()
        self._inputs.clear()
        return False

    def start(self, batch: int) -> None:
        """The next forward of the block is on calibration batch ``batch``."""
        self._batch = batch
        self._calls.clear()

    def freeze(self, name: str) -> None:
        """Layer ``name`` has its final (quantized) weight for the rest of the block. If the
        quantizer replaced the module (a lattice-coded ``VQLinear`` for an ``nn.Linear``), the
        new module is the one wrapped and called from now on."""
        self.frozen.add(name)
        if not self.enabled:
            return
        current = self.block.get_submodule(name)
        if current is not self.linears.get(name):
            self.linears[name] = current
            current.forward = self._wrap(name, current.forward)
            self._wrapped.append(current)

    def _keep_input(self, lin):
        def hook(mod, inputs):
            if self._batch is not None and self._before[lin] <= self.frozen:
                key = (lin, self._batch, self._calls.get(lin, 0))
                if key not in self._inputs:
                    self._inputs[key] = (inputs[0], inputs[0]._version)
        return hook

    def _wrap(self, name, forward):
        deps, children = self.trace.deps[name], self.trace.children[name]
        tail = self.trace.tails.get(name)

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
            if not deps <= self.frozen:
                return forward(*args, **kwargs)
            out = None
            if tail is not None:
                lin, length = tail
                kept = self._inputs.get((lin, self._batch, call))
                if kept is not None and kept[0]._version == kept[1]:
                    y = self.linears[lin](kept[0])
                    out = y if length == 0 else (y,) + (None,) * (length - 1)
                    self.hits += 1
            if out is None:
                out = forward(*args, **kwargs)
            self._cache[key] = (out, [t._version for t in _tensors(out)])
            for child in children:
                for c in range(max(1, self._calls.get(child, 0))):
                    self._cache.pop((child, self._batch, c), None)
                    self._inputs.pop((child, self._batch, c), None)
            return out
        return wrapped
