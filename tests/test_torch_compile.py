"""fusedrnn.torch under torch.compile(fullgraph=True), torch.export and torch.jit.trace.

The modules call the operators torch.ops.fusedrnn.forward / backward, so each of
the three records a call of the kernel, not its result: a compiled, exported or
traced module run on new inputs must give what the eager module gives on them
(values and gradients of the input, the initial state, the context frames and
every parameter; bit for bit, since the same kernel runs), and not what it gave
on the inputs it was recorded with. Also: agreement with torch.nn.LSTM / RNN,
dynamic shapes, dropout masks from torch's generator, torch.library.opcheck, and
the clear errors where something cannot work."""
import io
import warnings

import pytest

torch = pytest.importorskip("torch")
frt = pytest.importorskip("fusedrnn.torch")
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

F32, F64 = torch.float32, torch.float64


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles its own modules: forget the others' (their recompiles
    of the shared Call.forward would count against dynamo's limit)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
EXACT = dict(rtol=0, atol=0)

# name -> (class, constructor options, inputs: initial state, lengths, streaming context)
CASES = {
    "lstm-diagonal-state": (frt.LSTM, dict(peepholes="diagonal"), dict(state=True)),
    "lstm-full-proj-2layers-bidir-lengths": (
        frt.LSTM, dict(peepholes="full", proj_size=2, num_layers=2, bidirectional=True),
        dict(state=True, lengths=True)),
    "lstm-context-streaming": (frt.LSTM, dict(context=(2, 1), coupled_gates=True),
                               dict(state=True, stream=True)),
    "lstm-context-whole-sequence": (frt.LSTM, dict(context=(1, 1), num_layers=2),
                                    dict(lengths=True)),
    "lstm-batch_first-clips-reverse": (
        frt.LSTM, dict(peepholes=None, cell_clip=0.3, accumulation_clip=0.8, reverse=True,
                       batch_first=True), dict(state=True, lengths=True)),
    "rnn-feedback-2layers-bidir": (frt.RNN, dict(state_feedback=True, num_layers=2,
                                                 bidirectional=True), dict(state=True)),
    "rnn-lengths": (frt.RNN, dict(), dict(state=True, lengths=True)),
    "gru-2layers-bidir-lengths": (frt.GRU, dict(num_layers=2, bidirectional=True),
                                  dict(h=True, lengths=True)),
    "gru-original-batch_first-reverse": (
        frt.GRU, dict(linear_before_reset=False, batch_first=True, reverse=True),
        dict(h=True, lengths=True)),
}
PARAMS = [(c, F64) for c in CASES] + [("lstm-full-proj-2layers-bidir-lengths", F32),
                                      ("rnn-feedback-2layers-bidir", F32),
                                      ("gru-original-batch_first-reverse", F32)]
IDS = [f"{c}-{str(d)[-7:]}" for c, d in PARAMS]


class Call(torch.nn.Module):
    """m(x, hx, lengths=, x_future=) with every tensor a positional argument and
    a flat tuple of outputs, the form torch.jit.trace and torch.export take."""

    def __init__(self, m, inputs):
        super().__init__()
        self.m, self.inputs = m, inputs

    def forward(self, *args):
        args = list(args)
        x = args.pop(0)
        kw = {}
        hx = None
        if self.inputs.get("h"):  # a single state tensor (the GRU's h0)
            hx = args.pop(0)
        if self.inputs.get("state"):
            hx = (args.pop(0), args.pop(0))
            if self.inputs.get("stream"):
                hx = (*hx, args.pop(0))
        if self.inputs.get("lengths"):
            kw["lengths"] = args.pop(0)
        if self.inputs.get("stream"):
            kw["x_future"] = args.pop(0)
        y, state = self.m(x, hx, **kw)
        return (y, *state) if isinstance(state, tuple) else (y, state)


def _module(case, dtype, seed=0):
    cls, opts, inputs = CASES[case]
    return Call(cls(3, 4, dtype=dtype, seed=seed, **opts), inputs)


def _args(call, T, B, seed, dtype):
    """Inputs of a Call for T steps and B rows; the floating ones require grad."""
    m, inputs = call.m, call.inputs
    g = torch.Generator().manual_seed(seed)
    LD = m.num_layers * (2 if m.bidirectional else 1)
    R = getattr(m, "proj_size", 0) or m.hidden_size

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()

    args = [rand(*((B, T, m.input_size) if m.batch_first else (T, B, m.input_size)))]
    if inputs.get("h"):
        args.append(rand(LD, B, m.hidden_size, scale=0.5))
    if inputs.get("state"):
        args += [rand(LD, B, R, scale=0.5), rand(LD, B, m.hidden_size, scale=0.5)]
        if inputs.get("stream"):
            args.append(rand(m.context[0], B, m.input_size))
    if inputs.get("lengths"):
        lens = torch.randint(0, T + 1, (B,), generator=g)
        lens[0] = T
        args.append(lens)
    if inputs.get("stream"):
        args.append(torch.randn(m.context[1], B, m.input_size, generator=g, dtype=dtype))
    return args


def _fresh(args):
    return [a.detach().clone().requires_grad_(a.requires_grad) for a in args]


def _run(fn, params, args, seed=1, used=None):
    """Outputs, and the gradients of a random weighting of them (of the first
    `used` ones) with respect to the floating inputs and the named parameters."""
    outs = fn(*args)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum()
               for o in outs[:used])
    leaves = [a for a in args if a.requires_grad]
    names = list(params)
    grads = torch.autograd.grad(loss, leaves + [params[n] for n in names], allow_unused=True)
    return ([o.detach() for o in outs], list(grads[:len(leaves)]),
            dict(zip(names, grads[len(leaves):])))


def _assert_same(got, ref, tol=EXACT):
    outs, dins, dparams = got
    outs_r, dins_r, dparams_r = ref
    assert len(outs) == len(outs_r) and len(dins) == len(dins_r)
    for a, b in zip(outs, outs_r):
        torch.testing.assert_close(a, b, **tol)
    for a, b in zip(dins, dins_r):
        torch.testing.assert_close(a, b, **tol)
    assert set(dparams) == set(dparams_r)
    for n in dparams:
        torch.testing.assert_close(dparams[n], dparams_r[n], **tol, msg=n)


def _params(mod, prefix="m."):
    return {n[len(prefix):] if n.startswith(prefix) else n: p
            for n, p in mod.named_parameters()}


def _check_new_inputs(recorded, call, dtype, first):
    """The recorded callable on new inputs (another batch of values) equals the
    eager module on them and differs from what it returned for `first`."""
    args = _args(call, T=6, B=3, seed=22, dtype=dtype)
    ref = _run(call, _params(call), _fresh(args))
    got = _run(recorded[0], recorded[1], _fresh(args))
    _assert_same(got, ref)
    assert not torch.allclose(got[0][0], first[0][0])


@pytest.mark.parametrize("case,dtype", PARAMS, ids=IDS)
def test_compile_fullgraph_matches_eager(case, dtype):
    call = _module(case, dtype)
    compiled = torch.compile(call, fullgraph=True, backend="aot_eager")
    args = _args(call, T=6, B=3, seed=11, dtype=dtype)
    ref = _run(call, _params(call), _fresh(args))
    got = _run(compiled, _params(call), _fresh(args))
    _assert_same(got, ref)
    _check_new_inputs((compiled, _params(call)), call, dtype, got)


@pytest.mark.parametrize("case,dtype", PARAMS, ids=IDS)
def test_export_matches_eager_and_round_trips(case, dtype):
    call = _module(case, dtype)
    args = _args(call, T=6, B=3, seed=11, dtype=dtype)
    ep = torch.export.export(call, tuple(_fresh(args)))
    assert "torch.ops.fusedrnn.forward" in ep.graph_module.code
    mod = ep.module()
    got = _run(mod, _params(mod), _fresh(args))
    _assert_same(got, _run(call, _params(call), _fresh(args)))
    _check_new_inputs((mod, _params(mod)), call, dtype, got)
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    loaded = torch.export.load(buf).module()
    _check_new_inputs((loaded, _params(loaded)), call, dtype, got)


@pytest.mark.parametrize("case,dtype", PARAMS, ids=IDS)
def test_jit_trace_matches_eager_and_round_trips(case, dtype):
    call = _module(case, dtype)
    args = _args(call, T=6, B=3, seed=11, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # no constant recorded
        traced = torch.jit.trace(call, tuple(_fresh(args)))
    assert "fusedrnn::forward" in str(traced.inlined_graph)
    got = _run(traced, _params(traced), _fresh(args))
    _assert_same(got, _run(call, _params(call), _fresh(args)))
    _check_new_inputs((traced, _params(traced)), call, dtype, got)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    _check_new_inputs((loaded, _params(loaded)), call, dtype, got)


def test_compile_inductor_and_dynamic_shapes():
    call = _module("lstm-full-proj-2layers-bidir-lengths", F64)
    compiled = torch.compile(call, fullgraph=True)  # the default backend (inductor)
    args = _args(call, T=5, B=2, seed=3, dtype=F64)
    _assert_same(_run(compiled, _params(call), _fresh(args)),
                 _run(call, _params(call), _fresh(args)))
    # dynamic sizes: the tape's size is then known at run time only
    dyn = torch.compile(call, fullgraph=True, backend="aot_eager", dynamic=True)
    for T, B in ((4, 2), (7, 3), (9, 1)):
        args = _args(call, T=T, B=B, seed=T, dtype=F64)
        _assert_same(_run(dyn, _params(call), _fresh(args)),
                     _run(call, _params(call), _fresh(args)))


NN_CASES = [("LSTM", dict(num_layers=2, bidirectional=True, proj_size=2)),
            ("LSTM", dict(batch_first=True)),
            ("RNN", dict(num_layers=2, bidirectional=True)),
            ("GRU", dict(num_layers=2, bidirectional=True))]


@pytest.mark.parametrize("kind,opts", NN_CASES, ids=["lstm-2layers-bidir-proj",
                                                     "lstm-batch_first", "rnn-2layers-bidir",
                                                     "gru-2layers-bidir"])
@pytest.mark.parametrize("how", ["compile", "export", "trace"])
def test_recorded_module_matches_torch_nn(kind, opts, how):
    torch.manual_seed(4)
    ref = getattr(torch.nn, kind)(3, 4, dtype=F64, **opts)
    m = getattr(frt, kind).from_torch(ref)
    call = Call(m, dict(h=True) if kind == "GRU" else dict(state=True))
    args = _args(call, T=5, B=3, seed=8, dtype=F64)
    if kind == "RNN":   # torch's RNN has no cell state: h0 only, the s of fusedrnn follows
        args[2] = args[2].detach().zero_()
    if how == "compile":
        rec = torch.compile(call, fullgraph=True, backend="aot_eager")
        params = _params(call)
    elif how == "export":
        rec = torch.export.export(call, tuple(_fresh(args))).module()
        params = _params(rec)
    else:
        rec = torch.jit.trace(call, tuple(_fresh(args)))
        params = _params(rec)
    outs, dins, dparams = _run(rec, params, _fresh(args), used=3 if kind == "LSTM" else 2)

    def torch_fn(x, h0, c0=None):
        y, st = ref(x, (h0, c0) if kind == "LSTM" else h0)
        return (y, *st) if kind == "LSTM" else (y, st)

    ref_args = _fresh(args)
    if kind == "RNN":
        ref_args[2].requires_grad_(False)
    r_outs, r_dins, r_dparams = _run(torch_fn, dict(ref.named_parameters()), ref_args)
    tol = dict(rtol=1e-10, atol=1e-12)
    for a, b in zip(outs, r_outs):   # (y, h, c): RNN's extra s is not torch's
        torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(dins[0], r_dins[0], **tol)     # dx
    torch.testing.assert_close(dins[1], r_dins[1], **tol)     # dh0
    if kind == "LSTM":
        torch.testing.assert_close(dins[2], r_dins[2], **tol)  # dc0
    W_h = {"LSTM": "W_v", "RNN": "W_r", "GRU": "W_h"}[kind]
    b = "theta_s" if kind == "RNN" else "b"
    H = m.hidden_size
    for l in range(m.num_layers):
        for d in range(2 if m.bidirectional else 1):
            t = f"_l{l}" + ("_reverse" if d else "")
            s = ("" if l == 0 else f"_l{l}") + ("_reverse" if d else "")
            torch.testing.assert_close(dparams["W_x" + s], r_dparams["weight_ih" + t], **tol)
            torch.testing.assert_close(dparams[W_h + s], r_dparams["weight_hh" + t], **tol)
            torch.testing.assert_close(dparams[b + s], r_dparams["bias_ih" + t], **tol)
            if kind == "GRU":  # bias_hh: the r, z rows are in b, the n rows are b_hn
                torch.testing.assert_close(dparams[b + s][:2 * H], r_dparams["bias_hh" + t][:2 * H],
                                           **tol)
                torch.testing.assert_close(dparams["b_hn" + s], r_dparams["bias_hh" + t][2 * H:],
                                           **tol)
            else:
                torch.testing.assert_close(dparams[b + s], r_dparams["bias_hh" + t], **tol)


def test_dropout_masks_follow_torch_generator_when_recorded():
    m = frt.LSTM(3, 4, num_layers=3, dropout=0.5, dtype=F64, seed=0)
    x = torch.randn(6, 2, 3, dtype=F64)
    traced = torch.jit.trace(m, (x,), check_trace=False)  # masks differ between runs
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    for rec in (traced, compiled):
        torch.manual_seed(5)
        y_eager = m(x)[0]
        torch.manual_seed(5)
        y_rec = rec(x)[0]
        torch.testing.assert_close(y_rec, y_eager, **EXACT)
        y_again = rec(x)[0]
        assert not torch.allclose(y_again, y_rec)   # fresh masks on each call
    m.eval()
    with torch.no_grad():
        y_eval = m(x)[0]
        torch.testing.assert_close(torch.compile(m, fullgraph=True, backend="aot_eager")(x)[0],
                                   y_eval, **EXACT)


def test_opcheck_forward_and_backward():
    for m, hx in ((frt.LSTM(3, 4, proj_size=2, num_layers=2, bidirectional=True, dtype=F64,
                            seed=0), True),
                  (frt.RNN(3, 4, state_feedback=True, dtype=F64, seed=0), False),
                  (frt.GRU(3, 4, linear_before_reset=False, num_layers=2, dtype=F64, seed=0),
                   "h")):
        LD, R = m.num_layers * (2 if m.bidirectional else 1), getattr(m, "proj_size", 0) or 4
        x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
        s0 = torch.randn(LD, 2, 4, dtype=F64, requires_grad=True) if hx is True else None
        o0 = torch.randn(LD, 2, R, dtype=F64, requires_grad=True) if hx else None
        ws = list(m.parameters())
        lens = torch.tensor([5, 3])
        args = (m._op_config, x, s0, o0, None, None, lens, None, ws, True)
        torch.library.opcheck(torch.ops.fusedrnn.forward.default, args)
        detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args[:8]]
        y, s_T, o_T, tape = torch.ops.fusedrnn.forward(*detached, [w.detach() for w in ws], True)
        dstate = (None, torch.randn_like(o_T)) if hx == "h" else (torch.randn_like(s_T), None)
        torch.library.opcheck(torch.ops.fusedrnn.backward.default,
                              (m._op_config, tape, torch.randn_like(y), *dstate,
                               [w.detach() for w in ws]))


def test_what_cannot_be_recorded_fails_clearly():
    m = frt.LSTM(3, 4, dtype=F64, seed=0)
    x = torch.randn(5, 2, 3, dtype=F64)
    packed = pack_padded_sequence(x, torch.tensor([5, 3]))
    with pytest.raises(Exception, match="PackedSequence input cannot be compiled or exported"):
        torch.compile(m, fullgraph=True, backend="aot_eager")(packed)
    with pytest.raises(ValueError, match="PackedSequence input cannot be compiled or exported"):
        torch.export.export(m, (packed,))
    # recorded without gradients, the call keeps no tape: differentiating it later is refused
    with torch.no_grad():
        ep = torch.export.export(m, (x,))
    m.requires_grad_(True)
    y = ep.module()(x.clone().requires_grad_())[0]
    with pytest.raises(RuntimeError, match="ran without a tape"):
        y.sum().backward()


class _ListLengths(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x, lengths=[5, 2, 4])[0]


def test_lengths_given_as_a_list_are_a_constant_of_the_recorded_graph():
    call = _ListLengths(frt.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=F64, seed=0))
    x = torch.randn(5, 3, 3, dtype=F64)
    x2 = torch.randn(5, 3, 3, dtype=F64)
    ref = call(x2)
    assert torch.equal(ref[2:, 1], torch.zeros_like(ref[2:, 1]))   # row 1 stops after 2 steps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # trace warns that the list is a constant
        recorded = [torch.compile(call, fullgraph=True, backend="aot_eager"),
                    torch.export.export(call, (x,)).module(), torch.jit.trace(call, (x,))]
    for rec in recorded:
        torch.testing.assert_close(rec(x2), ref, **EXACT)
