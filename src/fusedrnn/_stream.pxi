# The per-frame step of a stream (included by _kernel.pyx).
#
# A stream runs a unidirectional stack of LSTM, RNN or GRU cells one frame at a
# time. Everything a step needs is made once by fusedrnn.stream (state buffers
# in two halves that swap every step, the inference workspace of a T = 1 call,
# the context window); a step checks the frame's shape and dtype, that the
# layers still hold the weight arrays the cells point at, and calls the
# kernel's forward with T = 1 for each cell.
from libc.stdint cimport uintptr_t
from libc.string cimport memcmp, memcpy, memmove, memset
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_STRIDES, \
    PyBUF_FORMAT, PyBUF_WRITABLE
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from libc.stdlib cimport calloc, free

cdef extern from *:
    """
    /* One T = 1 forward of a stream's cell through the kernel's public API, for
     * both of its forms: with named-pointer structs, a call options struct and
     * prepacked weights (FR_LSTM_WEIGHTS_FIELDS defined), or the positional form
     * whose configuration carries the path and the threads. */
    /* The configuration of a stream's T = 1 calls, before the workspace is sized. */
    static void fr_stream_lstm_prepare(fr_lstm_config *cfg, int threads) {
    #ifndef FR_LSTM_WEIGHTS_FIELDS
        cfg->packed_max_rows = 1 << 30; /* the micro-kernel (packing in the call) at T = 1 */
        cfg->num_threads = threads;
    #else
        (void)cfg; (void)threads;
    #endif
    }

    static int fr_stream_lstm_forward(int f64, void *y_seq, void *s_T, void *y_T, void *work,
                                      const void *x, const void *s0, const void *y0,
                                      const void *const *w, fr_lstm_config *cfg, int threads) {
    #ifdef FR_LSTM_WEIGHTS_FIELDS
        fr_call call = {threads, NULL, NULL};
        if (f64) {
            fr_lstm_forward_seq_f64 q = {(double *)y_seq, (double *)s_T, (double *)y_T, NULL,
                                         (double *)work, (const double *)x, (const double *)s0,
                                         (const double *)y0};
            fr_lstm_weights_f64 p = {(const double *)w[0], (const double *)w[1],
                                     (const double *)w[2], (const double *)w[3],
                                     (const double *)w[4], (const double *)w[5]};
            return fr_lstm_forward_f64(&q, &p, cfg, &call);
        }
        fr_lstm_forward_seq_f32 q = {(float *)y_seq, (float *)s_T, (float *)y_T, NULL,
                                     (float *)work, (const float *)x, (const float *)s0,
                                     (const float *)y0};
        fr_lstm_weights_f32 p = {(const float *)w[0], (const float *)w[1], (const float *)w[2],
                                 (const float *)w[3], (const float *)w[4], (const float *)w[5],
                                 w[6]};
        return fr_lstm_forward_f32(&q, &p, cfg, &call);
    #else
        if (f64)
            return fr_lstm_forward_f64((double *)y_seq, (double *)s_T, (double *)y_T, NULL,
                                       (double *)work, (const double *)x, (const double *)s0,
                                       (const double *)y0, (const double *)w[0],
                                       (const double *)w[1], (const double *)w[2],
                                       (const double *)w[3], (const double *)w[4], cfg);
        return fr_lstm_forward_f32((float *)y_seq, (float *)s_T, (float *)y_T, NULL,
                                   (float *)work, (const float *)x, (const float *)s0,
                                   (const float *)y0, (const float *)w[0], (const float *)w[1],
                                   (const float *)w[2], (const float *)w[3],
                                   (const float *)w[4], cfg);
    #endif
    }

    static int fr_stream_rnn_forward(int f64, void *r_seq, void *s_T, void *r_T, void *work,
                                     const void *x, const void *s0, const void *r0,
                                     const void *const *w, fr_rnn_config *cfg) {
    #ifdef FR_LSTM_WEIGHTS_FIELDS
        fr_call call = {1, NULL, NULL};
        if (f64) {
            fr_rnn_forward_seq_f64 q = {(double *)r_seq, (double *)s_T, (double *)r_T, NULL,
                                        (double *)work, (const double *)x, (const double *)s0,
                                        (const double *)r0};
            fr_rnn_weights_f64 p = {(const double *)w[0], (const double *)w[1],
                                    (const double *)w[2], (const double *)w[3]};
            return fr_rnn_forward_f64(&q, &p, cfg, &call);
        }
        fr_rnn_forward_seq_f32 q = {(float *)r_seq, (float *)s_T, (float *)r_T, NULL,
                                    (float *)work, (const float *)x, (const float *)s0,
                                    (const float *)r0};
        fr_rnn_weights_f32 p = {(const float *)w[0], (const float *)w[1], (const float *)w[2],
                                (const float *)w[3], w[4]};
        return fr_rnn_forward_f32(&q, &p, cfg, &call);
    #else
        if (f64)
            return fr_rnn_forward_f64((double *)r_seq, (double *)s_T, (double *)r_T, NULL,
                                      (double *)work, (const double *)x, (const double *)s0,
                                      (const double *)r0, (const double *)w[0],
                                      (const double *)w[1], (const double *)w[2],
                                      (const double *)w[3], cfg);
        return fr_rnn_forward_f32((float *)r_seq, (float *)s_T, (float *)r_T, NULL,
                                  (float *)work, (const float *)x, (const float *)s0,
                                  (const float *)r0, (const float *)w[0], (const float *)w[1],
                                  (const float *)w[2], (const float *)w[3], cfg);
    #endif
    }

    #ifdef FR_LSTM_WEIGHTS_FIELDS
    static int fr_stream_gru_forward(int f64, void *h_seq, void *h_T, void *work, const void *x,
                                     const void *h0, const void *const *w, fr_gru_config *cfg,
                                     int threads) {
        fr_call call = {threads, NULL, NULL};
        if (f64) {
            fr_gru_forward_seq_f64 q = {(double *)h_seq, (double *)h_T, NULL, (double *)work,
                                        (const double *)x, (const double *)h0};
            fr_gru_weights_f64 p = {(const double *)w[0], (const double *)w[1],
                                    (const double *)w[2], (const double *)w[3]};
            return fr_gru_forward_f64(&q, &p, cfg, &call);
        }
        fr_gru_forward_seq_f32 q = {(float *)h_seq, (float *)h_T, NULL, (float *)work,
                                    (const float *)x, (const float *)h0};
        fr_gru_weights_f32 p = {(const float *)w[0], (const float *)w[1], (const float *)w[2],
                                (const float *)w[3], w[4]};
        return fr_gru_forward_f32(&q, &p, cfg, &call);
    }
    #endif
    """
    void fr_stream_lstm_prepare(fr_lstm_config *cfg, int threads)
    int fr_stream_lstm_forward(int f64, void *y_seq, void *s_T, void *y_T, void *work,
                               const void *x, const void *s0, const void *y0,
                               const void *const *w, fr_lstm_config *cfg, int threads) nogil
    int fr_stream_rnn_forward(int f64, void *r_seq, void *s_T, void *r_T, void *work,
                              const void *x, const void *s0, const void *r0,
                              const void *const *w, fr_rnn_config *cfg) nogil
    int fr_stream_gru_forward(int f64, void *h_seq, void *h_T, void *work, const void *x,
                              const void *h0, const void *const *w, fr_gru_config *cfg,
                              int threads) nogil


ctypedef enum stream_cell_kind:
    CELL_RNN, CELL_LSTM, CELL_GRU

ctypedef struct stream_cell:
    stream_cell_kind kind
    int threads              # kernel threads of a step
    fr_lstm_config lc        # T = 1
    fr_rnn_config rc         # T = 1
    fr_gru_config gc         # T = 1
    char *x                  # (B, I_l) input: the frame, the window or the cell below's y
    char *y                  # (B, R) output (the step's out for the top cell)
    char *s[2]               # (B, H) state s, two halves (unused by the GRU)
    char *o[2]               # (B, R) output fed back (v or q; r for the RNN; h for the GRU),
                             # two halves
    const void *w[7]         # LSTM: W_x, W_v, b, W_s, W_qv, packed, reduced; RNN: W_x, W_r,
                             # theta_s, W_s, reduced; GRU: W_x, W_h, b, b_hn, reduced (the
                             # reduced-precision panels of a quantized layer's cell)


ctypedef struct content_check:
    const char *live         # a weight array of the layer
    const char *copy         # the stream's copy of it, as packed
    size_t nbytes
    bint tracked             # writes into it are counted (fusedrnn.core._tracked.VERSION)


cdef inline char *_addr(object a):
    """Data pointer of a NumPy array (None: NULL)."""
    return NULL if a is None else <char *><uintptr_t>a.__array_interface__["data"][0]


cdef inline int _cell_forward(stream_cell *c, char *work, int f64, int cur) noexcept nogil:
    """One T = 1 kernel forward: state half `cur` in, the other half out."""
    cdef int nxt = 1 - cur
    if c.kind == CELL_LSTM:
        return fr_stream_lstm_forward(f64, c.y, c.s[nxt], c.o[nxt], work, c.x, c.s[cur],
                                      c.o[cur], c.w, &c.lc, c.threads)
    if c.kind == CELL_GRU:
        return fr_stream_gru_forward(f64, c.y, c.o[nxt], work, c.x, c.o[cur], c.w, &c.gc,
                                     c.threads)
    return fr_stream_rnn_forward(f64, c.y, c.s[nxt], c.o[nxt], work, c.x, c.s[cur], c.o[cur],
                                 c.w, &c.rc)


cdef inline bint _format_is(const char *fmt, char code) noexcept:
    """A buffer format of one native little-endian float of the given code."""
    if fmt == NULL:
        return code == b'B'
    if fmt[0] == b'@' or fmt[0] == b'=' or fmt[0] == b'<':
        fmt += 1
    return fmt[0] == code and fmt[1] == 0


cdef class StreamCore:
    """The per-frame part of a stream over a stack of LSTM, RNN or GRU cells (see
    fusedrnn.stream.Stream, which builds it and adds the rest)."""
    cdef stream_cell *cells
    cdef int n_cells
    cdef int f64
    cdef char code                # buffer format of the dtype: 'f' or 'd'
    cdef Py_ssize_t isz           # bytes per element
    cdef readonly int64_t batch
    cdef readonly int64_t input_size
    cdef readonly int64_t output_size
    cdef int64_t K                # context window frames (L_past + 1 + L_future); 1: none
    cdef readonly int64_t delay   # L_future: frames between a frame and its output
    cdef char *win                # (B, K, I) the last K frames of each row, oldest first
    cdef char *work               # inference workspace of a T = 1 call (shared by the cells)
    cdef int64_t *hold            # (B) steps each row still holds (reset rows of a delayed stream)
    cdef int64_t *active          # (B) lengths of the T = 1 call: 0 holds the row
    cdef public int64_t frames_in  # frames received since the start (or the last flush)
    cdef int64_t n_hold           # rows with hold > 0
    cdef public int cur           # the state half that holds the current state
    cdef public bint release_gil  # run the kernel calls without the GIL
    cdef bint busy
    cdef object keep              # the arrays behind the pointers (kept alive)
    cdef object weights           # [(owner, params dict, [(key, array), ...]), ...]
    cdef object out_shape, dtype, np_empty
    cdef content_check *chk       # weights held packed, compared before a step
    cdef int n_chk
    cdef int n_untracked          # of them compared before every step
    cdef const int64_t *version   # the count of writes through tracked arrays
    cdef int64_t seen             # its value when the tracked checks last ran
    cdef object chk_keep

    def __cinit__(self, *args, **kwargs):
        self.cells = NULL
        self.hold = NULL
        self.active = NULL
        self.chk = NULL

    def __dealloc__(self):
        free(self.chk)
        free(self.cells)
        free(self.hold)
        free(self.active)

    def _init_core(self, int n_cells, object dtype, int64_t batch, int64_t input_size,
                   int64_t output_size, int64_t L_past, int64_t L_future, object win):
        """Sizes and the window buffer (B, K, I) (None without a context window);
        then _set_lstm_cell / _set_rnn_cell for each cell, and _set_work."""
        if self.cells != NULL:
            raise RuntimeError("internal: stream core set up twice")
        self.cells = <stream_cell *>calloc(n_cells, sizeof(stream_cell))
        self.hold = <int64_t *>calloc(batch, sizeof(int64_t))
        self.active = <int64_t *>calloc(batch, sizeof(int64_t))
        if self.cells == NULL or self.hold == NULL or self.active == NULL:
            raise MemoryError()
        self.n_cells = n_cells
        self.dtype = np.dtype(dtype)
        self.f64 = self.dtype == np.float64
        self.code = b'd' if self.f64 else b'f'
        self.isz = self.dtype.itemsize
        self.batch, self.input_size, self.output_size = batch, input_size, output_size
        self.K = L_past + 1 + L_future
        self.delay = L_future
        self.win = _addr(win)
        self.work = NULL
        self.keep = [win]
        self.weights = []
        self.out_shape = (batch, output_size)
        self.np_empty = np.empty
        self.busy = False
        self.release_gil = True

    def _set_lstm_cell(self, int i, int64_t I, int64_t H, int64_t P, int peepholes,
                       bint coupled_gates, double cell_clip, double accumulation_clip,
                       int threads, object x, object y, object s, object o, object warps=None,
                       int reduced=0):
        """Cell i: sizes and options, its input x (None: the frame or the window),
        output y (None: the step's out), state halves s (2, B, H) and o (2, B, R);
        warps: None (the defaults) or the kernel's (G_c, G_d of u, G_d of r); reduced:
        FR_REDUCED_* of a quantized layer (its panels come with _set_weights)."""
        cdef stream_cell *c = &self.cells[i]
        c.kind = CELL_LSTM
        c.lc.T = 1; c.lc.B = self.batch; c.lc.I = I; c.lc.H = H; c.lc.P = P
        c.lc.peepholes = peepholes; c.lc.coupled_gates = coupled_gates; c.lc.reverse = 0
        c.lc.cell_clip = cell_clip; c.lc.accumulation_clip = accumulation_clip
        c.lc.lengths = NULL
        c.lc.gate = _activation(warps[0] if warps else None)
        c.lc.cell = _activation(warps[1] if warps else None)
        c.lc.output = _activation(warps[2] if warps else None)
        c.lc.reduced = reduced
        c.threads = threads
        fr_stream_lstm_prepare(&c.lc, threads)
        self._set_buffers(c, x, y, s, o)

    def _set_rnn_cell(self, int i, int64_t I, int64_t H, bint state_feedback, object x,
                      object y, object s, object o, object activation=None,
                      double accumulation_clip=0.0, int reduced=0):
        cdef stream_cell *c = &self.cells[i]
        c.kind = CELL_RNN
        c.rc.T = 1; c.rc.B = self.batch; c.rc.I = I; c.rc.H = H
        c.rc.state_feedback = state_feedback; c.rc.reverse = 0; c.rc.lengths = NULL
        c.rc.activation = _activation(activation)
        c.rc.accumulation_clip = accumulation_clip
        c.rc.reduced = reduced
        c.threads = 1
        self._set_buffers(c, x, y, s, o)

    def _set_gru_cell(self, int i, int64_t I, int64_t H, bint linear_before_reset, int threads,
                      object x, object y, object s, object o, warps=None,
                      double accumulation_clip=0.0, int reduced=0):
        """Cell i of a GRU: h lives in the o halves (B, H); warps: None (sigmoid,
        tanh) or two (kind, alpha, beta), f and g; reduced: FR_REDUCED_* of a quantized
        layer (its panels come with _set_weights)."""
        cdef stream_cell *c = &self.cells[i]
        c.kind = CELL_GRU
        c.gc.T = 1; c.gc.B = self.batch; c.gc.I = I; c.gc.H = H
        c.gc.linear_before_reset = linear_before_reset; c.gc.reverse = 0; c.gc.lengths = NULL
        c.gc.gate = _activation(warps[0] if warps else None)
        c.gc.cell = _activation(warps[1] if warps else None)
        c.gc.accumulation_clip = accumulation_clip
        c.gc.reduced = reduced
        c.threads = threads
        self._set_buffers(c, x, y, s, o)

    cdef _set_buffers(self, stream_cell *c, object x, object y, object s, object o):
        c.x = _addr(x)
        c.y = _addr(y)
        c.s[0] = _addr(s[0]); c.s[1] = _addr(s[1])
        c.o[0] = _addr(o[0]); c.o[1] = _addr(o[1])
        self.keep.extend([x, y, s, o])

    def _work_size(self):
        """Elements of the inference workspace the cells' T = 1 calls need."""
        cdef size_t n = 0, most = 0
        cdef int i
        for i in range(self.n_cells):
            if self.cells[i].kind == CELL_LSTM:
                _check(fr_lstm_workspace_size(&n, &self.cells[i].lc, 0), "stream")
            elif self.cells[i].kind == CELL_GRU:
                _check(fr_gru_workspace_size(&n, &self.cells[i].gc, 0), "stream")
            else:
                _check(fr_rnn_workspace_size(&n, &self.cells[i].rc, 0), "stream")
            most = n if n > most else most
        return most

    def _set_work(self, object work):
        """The workspace (at least _work_size() elements, 64-byte aligned)."""
        if work is None or work.shape[0] < self._work_size():
            raise ValueError("internal: stream workspace too small")
        self.work = _addr(work)
        self.keep.append(work)

    def _set_weights(self, int i, object arrays):
        """Cell i's weight arrays (C-contiguous, of the stream's dtype, checked by
        the caller): LSTM W_x, W_v, b, W_s, W_qv, packed (a PackedWeights buffer),
        reduced (a QPackedWeights buffer); RNN W_x, W_r, theta_s, W_s, reduced
        (an RNNQPackedWeights buffer); GRU W_x, W_h, b, b_hn, reduced (a GRUQPackedWeights
        buffer) (None: absent)."""
        cdef stream_cell *c = &self.cells[i]
        cdef int k
        for k in range(7):
            c.w[k] = _addr(arrays[k]) if k < len(arrays) else NULL

    def _set_checks(self, object triples, object version, int64_t seen):
        """[(array, copy, tracked), ...]: the weights the cells hold packed and the
        stream's copies of them, compared before a step (self._rebind() is called
        when one differs): the tracked ones (writes into them counted in
        `version`, a (1,) int64 array) when `version` moved since the last check,
        which `seen` is, the others before every step."""
        cdef int i
        free(self.chk)
        self.chk = NULL
        self.n_chk = self.n_untracked = 0
        self.chk_keep = [list(triples), version]
        self.version = <const int64_t *>_addr(version)
        self.seen = seen
        if not triples:
            return
        self.chk = <content_check *>calloc(len(triples), sizeof(content_check))
        if self.chk == NULL:
            raise MemoryError()
        for i, (a, b, tracked) in enumerate(triples):
            self.chk[i].live = _addr(a)
            self.chk[i].copy = _addr(b)
            self.chk[i].nbytes = a.nbytes
            self.chk[i].tracked = tracked
            self.n_untracked += not tracked
        self.n_chk = len(triples)

    cdef bint _contents_changed(self) noexcept nogil:
        """Whether a packed weight differs from its copy (exact: the tracked ones are
        compared whenever a tracked write happened since the last check)."""
        cdef int i
        cdef int64_t now = self.version[0]
        cdef bint all_ = now != self.seen
        for i in range(self.n_chk):
            if (all_ or not self.chk[i].tracked) and \
                    memcmp(self.chk[i].live, self.chk[i].copy, self.chk[i].nbytes) != 0:
                return True
        self.seen = now
        return False

    def _watch(self, object weights):
        """[(owner, params dict, [(key, array), ...]), ...]: every step checks that
        owner.params is still that dict and holds those arrays; when not, it calls
        self._rebind() before computing."""
        self.weights = weights

    cdef bint _weights_current(self):
        cdef Py_ssize_t i, j
        cdef tuple entry, kv
        cdef list pairs
        cdef PyObject *held
        for i in range(len(self.weights)):
            entry = <tuple>self.weights[i]
            if getattr(entry[0], "params") is not entry[1]:
                return False
            pairs = <list>entry[2]
            for j in range(len(pairs)):
                kv = <tuple>pairs[j]
                held = PyDict_GetItem(entry[1], kv[0])
                if held == NULL or held != <PyObject *>kv[1]:
                    return False
        return True

    def _check_weights(self):
        """Rebind the cells when a layer's params changed (another array or dict, or
        the contents of one the cells hold packed)."""
        if self._contents_changed() or not self._weights_current():
            self._rebind()

    # -- state and rows ---------------------------------------------------------------
    def _enter(self):
        """Mark the stream in use (refuse a second thread)."""
        if self.busy:
            raise RuntimeError("this stream is in use by another thread: a stream is one "
                               "sequence of frames; give each thread its own stream")
        self.busy = True

    def _leave(self):
        self.busy = False

    def _set_hold(self, object rows, int64_t steps):
        """Rows that hold their state (output zeros) for the next `steps` steps."""
        cdef Py_ssize_t r
        for r in rows:
            if self.hold[r] == 0 and steps > 0:
                self.n_hold += 1
            elif self.hold[r] > 0 and steps == 0:
                self.n_hold -= 1
            self.hold[r] = steps

    def _clear(self):
        """Forget the frames received (after a flush or a full reset)."""
        cdef Py_ssize_t r
        self.frames_in = 0
        for r in range(self.batch):
            self.hold[r] = 0
        self.n_hold = 0

    @property
    def rows_holding(self):
        """Rows that hold their state (reset rows whose first output is not due yet)."""
        return self.n_hold

    # -- the step ----------------------------------------------------------------------
    cdef int _buffer(self, object a, Py_buffer *view, str name, bint writable) except -1:
        """a as a C-contiguous (B, I) (or (B, R) for out) buffer of the stream's dtype."""
        cdef int flags = PyBUF_STRIDES | PyBUF_FORMAT | (PyBUF_WRITABLE if writable else 0)
        cdef int64_t cols = self.output_size if writable else self.input_size
        try:
            PyObject_GetBuffer(a, view, flags)
        except Exception:
            self._bad(a, name, writable)
        if not (view.ndim == 2 and view.shape[0] == self.batch and view.shape[1] == cols
                and view.itemsize == self.isz and _format_is(view.format, self.code)
                and (view.shape[1] == 1 or view.strides[1] == self.isz)
                and (view.shape[0] == 1 or view.strides[0] == cols * self.isz)):
            PyBuffer_Release(view)
            self._bad(a, name, writable)
        return 0

    cdef int _bad(self, object a, str name, bint writable) except -1:
        """Raise the error that says what is wrong with frame / out."""
        cdef int64_t cols = self.output_size if writable else self.input_size
        want = f"a C-contiguous NumPy array of shape ({self.batch}, {cols}) and dtype {self.dtype}"
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be {want}, got {type(a).__name__} (convert with "
                            f"np.ascontiguousarray({name}, dtype=np.{self.dtype.name}))")
        if a.dtype != self.dtype:
            raise TypeError(f"{name} must be {want}, got dtype {a.dtype} (the stream does not "
                            f"cast: convert with {name}.astype(np.{self.dtype.name}))")
        if a.ndim != 2 or a.shape != (self.batch, cols):
            raise ValueError(f"{name} must be {want} (batch, "
                             f"{'output' if writable else 'input'} features), got shape {a.shape}")
        if writable and not a.flags.writeable:
            raise ValueError(f"{name} must be {want} and writeable, got a read-only array")
        raise ValueError(f"{name} must be {want}, got a non-contiguous array (strides "
                         f"{a.strides}); pass np.ascontiguousarray({name})")

    def step(self, frame, out=None):
        """Take one frame (B, I) and return the output (B, R) of the step it
        completes: a new array, or `out` when given (a C-contiguous (B, R) array of
        the stream's dtype, filled in place). With a look-ahead, returns None until
        frame n + delay has arrived for step n."""
        if self.busy:
            self._enter()  # raises
        self.busy = True
        try:
            return self._step_held(frame, out)
        finally:
            self.busy = False

    def _step_held(self, frame, out=None):
        """step() for a caller that has marked the stream in use (_enter)."""
        cdef Py_buffer fv, ov
        cdef bint have_f = False, have_o = False
        cdef bint ready = self.frames_in >= self.delay
        try:
            self._buffer(frame, &fv, "frame", False)
            have_f = True
            if ready:
                if out is None:
                    out = self.np_empty(self.out_shape, self.dtype)
                self._buffer(out, &ov, "out", True)
                have_o = True
            self._step(<char *>fv.buf, <char *>ov.buf if ready else NULL, ready)
        finally:
            if have_f:
                PyBuffer_Release(&fv)
            if have_o:
                PyBuffer_Release(&ov)
        return out if ready else None

    def _step_at(self, uintptr_t frame, object out, uintptr_t out_data):
        """step() on memory the caller has checked: frame at address `frame` (B, I)
        and, when a step is due, the output at `out_data` (B, R), both C-contiguous
        of the stream's dtype and alive during the call (the torch streams pass
        tensors' data_ptr()). out_data 0: into a new array. Returns out (or the new
        array), or None while a look-ahead waits."""
        cdef bint ready = self.frames_in >= self.delay, have_o = False
        cdef Py_buffer ov
        if self.busy:
            self._enter()  # raises
        self.busy = True
        try:
            if ready and out_data == 0:
                out = self.np_empty(self.out_shape, self.dtype)
                self._buffer(out, &ov, "out", True)
                have_o = True
                out_data = <uintptr_t>ov.buf
            self._step(<char *>frame, <char *>out_data if ready else NULL, ready)
        finally:
            self.busy = False
            if have_o:
                PyBuffer_Release(&ov)
        return out if ready else None

    @property
    def due(self):
        """Whether the next frame completes a step (False while a look-ahead fills)."""
        return self.frames_in >= self.delay

    cdef int _step(self, char *fp, char *op, bint ready) except -1:
        """The step on checked buffers, with the stream marked busy."""
        cdef int status = 0, cur = self.cur
        cdef bint stale = False
        cdef int64_t B = self.batch, r, n_hold
        cdef int64_t rowx = self.input_size * self.isz, rowy = self.output_size * self.isz
        if ready and op < fp + B * rowx and fp < op + B * rowy:
            raise ValueError("out must not overlap frame")
        if self.n_chk:
            if self.release_gil and (self.n_untracked or self.version[0] != self.seen):
                with nogil:
                    stale = self._contents_changed()
            else:
                stale = self._contents_changed()
        if stale or not self._weights_current():
            self._rebind()
        n_hold = self.n_hold
        if ready and n_hold:
            for r in range(B):
                self.active[r] = 0 if self.hold[r] > 0 else 1
        if self.release_gil:
            with nogil:
                status = self._run(fp, op, ready)
        else:
            status = self._run(fp, op, ready)
        if status != 0:
            _raise(status, "stream step")
        self.frames_in += 1
        if ready:
            self.cur = 1 - cur
            if n_hold:
                for r in range(B):
                    if self.hold[r] > 0:
                        memset(op + r * rowy, 0, rowy)
                        self.hold[r] -= 1
                        if self.hold[r] == 0:
                            self.n_hold -= 1
        return 0

    cdef int _run(self, char *frame, char *out, bint ready) noexcept nogil:
        """Shift the frame into the window; when a step is due, run every cell."""
        cdef Py_ssize_t K = self.K, b, i
        cdef int64_t B = self.batch, row = self.input_size * self.isz
        cdef stream_cell *c
        cdef int status
        if K > 1:
            for b in range(B):  # drop the oldest frame of the row, append the new one
                memmove(self.win + b * K * row, self.win + (b * K + 1) * row, (K - 1) * row)
                memcpy(self.win + (b * K + K - 1) * row, frame + b * row, row)
        if not ready:
            return 0
        for i in range(self.n_cells):
            c = &self.cells[i]
            if i == 0:
                c.x = self.win if K > 1 else frame
            if i == self.n_cells - 1:
                c.y = out
            if c.kind == CELL_LSTM:
                c.lc.lengths = self.active if self.n_hold else NULL
            elif c.kind == CELL_GRU:
                c.gc.lengths = self.active if self.n_hold else NULL
            else:
                c.rc.lengths = self.active if self.n_hold else NULL
            status = _cell_forward(c, self.work, self.f64, self.cur)
            if status != 0:
                return status
        return 0
