"""Descriptor matching: mutual nearest neighbours with Lowe's ratio test, vectorised.

Two implementations with identical results (at the default float32 precision):

- :func:`match_mutual_nn`: one query image against one reference set (the straightforward reference
  implementation; also used for map building).
- :class:`KeyframeMatcher`: one query image against several map keyframes at once, the localizer's hot path.
  The keyframes' descriptors live in one contiguous array made once at map load (the map's own array when every
  keypoint has a 3D point; else a copy of the rows that take part or, with ``from_flat(rows=...)``, the map's
  array plus those rows' indices); per query the candidates are gathered into a reused fp32 buffer and matched
  with one GEMM per block of query rows, so the similarity block stays in cache while the row/column maxima are
  taken; no per-query allocation grows with the map.

Precision: similarities are computed in float32 (``KeyframeMatcher(precision="int8")``: as integer products of
quantised descriptors instead, see :class:`Int8Product`). Float16 descriptors (a loaded map keeps them as the file
stores them) are widened to float32 where they are used (the per-query gather; ``astype`` in
:func:`match_mutual_nn`); float16 -> float32 is exact, so a float16 store gives bit-identical matches and scores to a
float32 store holding the same values, at half the memory and with no conversion at map load.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["match_mutual_nn", "KeyframeDescriptors", "KeyframeMatcher", "Int8Product", "PRECISIONS",
           "int8_unavailable"]

PRECISIONS = ("float32", "int8")


def match_mutual_nn(desc_q_ND: np.ndarray, desc_r_MD: np.ndarray, ratio: float = 0.8,
                    mutual: bool = True, min_sim: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    """Match two sets of L2-normalised descriptors.

    A query descriptor i matches reference j when j is i's nearest neighbour, its distance is below
    ``ratio`` times the second nearest (Lowe), i is j's nearest neighbour (when ``mutual``) and the cosine
    similarity is at least ``min_sim``.

    Args:
        desc_q_ND: ``[N x D]`` query descriptors (unit rows).
        desc_r_MD: ``[M x D]`` reference descriptors (unit rows).
        ratio: distance-ratio threshold in (0, 1]; 1 disables the test.

    Returns:
        matches_K2: ``[K x 2] int64`` pairs (query index, reference index).
        scores_K: ``[K] float32`` match confidence in [0, 1] (1 - d1/d2 scaled by similarity).
    """
    N, M = len(desc_q_ND), len(desc_r_MD)
    if N == 0 or M == 0:
        return np.zeros((0, 2), np.int64), np.zeros((0,), np.float32)
    S = desc_q_ND.astype(np.float32, copy=False) @ desc_r_MD.astype(np.float32, copy=False).T  # [N x M]
    rows = np.arange(N)
    nn = np.argmax(S, axis=1)
    s1 = S[rows, nn]
    col_best = np.argmax(S, axis=0) if mutual else None
    if M >= 2:
        S[rows, nn] = -np.inf  # S is our own product: reuse it to find the second best
        s2 = S.max(axis=1)
    else:
        s2 = np.full(N, -1.0, np.float32)
    d1 = np.sqrt(np.maximum(2.0 - 2.0 * s1, 0.0))
    d2 = np.sqrt(np.maximum(2.0 - 2.0 * s2, 0.0))
    keep = (d1 <= ratio * d2) & (s1 >= min_sim)
    if mutual:
        keep &= col_best[nn] == rows
    qi = rows[keep]
    ri = nn[keep]
    conf = (1.0 - d1[keep] / np.maximum(d2[keep], 1e-6)) if M >= 2 else np.clip(s1[keep], 0, 1)
    conf = np.clip(conf, 0.0, 1.0).astype(np.float32)
    return np.stack([qi, ri], axis=1).astype(np.int64), conf


class KeyframeDescriptors:
    """The local descriptors of all keyframes in one contiguous ``[N_total x D]`` array (or, see :meth:`from_flat`,
    the rows of the map's own array given by an index).

    Args:
        per_keyframe: one ``[M_k x D]`` array per keyframe (rows: the keypoints that take part in matching).
        dtype: ``None`` (default): float16 when every input is float16 (as a loaded map's descriptors), else float32;
            or numpy.float32 / numpy.float16 explicitly. Float16 halves the memory and matches exactly as float32
            with the same values (the matcher widens to float32 per query; see the module docstring); converting
            float32 values that are not float16-representable to float16 rounds them.
    """

    def __init__(self, per_keyframe: list[np.ndarray], dtype=None):
        D = next((a.shape[1] for a in per_keyframe if a.ndim == 2), 0)
        counts = np.array([len(a) for a in per_keyframe], np.int64)
        if dtype is None:
            dtype = np.float16 if per_keyframe and all(a.dtype == np.float16 for a in per_keyframe) else np.float32
        dtype = _check_dtype(dtype)
        flat = (np.concatenate([np.asarray(a).reshape(-1, D) for a in per_keyframe]).astype(dtype, copy=False)
                if len(per_keyframe) else np.zeros((0, D), dtype))
        self._set(flat, np.concatenate([[0], np.cumsum(counts)]), dtype)

    @classmethod
    def from_flat(cls, desc_ND: np.ndarray, offsets: np.ndarray, dtype=None, rows=None) -> KeyframeDescriptors:
        """A store over ``[N_total x D]`` descriptors already in keyframe order; keyframe k owns rows
        ``offsets[k]:offsets[k + 1]``. ``dtype`` ``None`` (default) keeps float16 / float32 input as it is: the store
        is then the caller's array itself when it is C-contiguous (no copy); other dtypes become float32.

        ``rows``: optional ``[N_sel]`` row indices into ``desc_ND``, in keyframe order (keyframe k:
        ``desc_ND[rows[offsets[k]:offsets[k + 1]]]``). The store then keeps ``desc_ND`` itself and the indices
        instead of a copy of those rows, and :meth:`get` gathers a keyframe's rows when asked (a few hundred kB per
        query). For a map whose keypoints mostly have 3D this saves a copy of nearly all its descriptors (0.6 GB at
        10k keyframes x 500 keypoints) and the time to make it.
        """
        self = cls.__new__(cls)
        desc_ND = np.asarray(desc_ND)
        if dtype is None:
            dtype = desc_ND.dtype if desc_ND.dtype in (np.float16, np.float32) else np.float32
        self._set(desc_ND, offsets, _check_dtype(dtype), rows)
        return self

    def _set(self, flat: np.ndarray, offsets, dtype, rows=None) -> None:
        self.offsets = np.asarray(offsets, np.int64)  # keyframe k: rows offsets[k]:offsets[k+1]
        if flat.ndim != 2:
            raise ValueError(f"descriptors must be [N x D], got shape {flat.shape}")
        self.rows = None  # None: keyframe k is desc[offsets[k]:offsets[k+1]]; else desc[rows[offsets[k]:...]]
        if rows is not None:
            rows = np.asarray(rows)
            if rows.ndim != 1 or not (rows.dtype.kind in "iu" or len(rows) == 0):
                raise ValueError(f"rows must be a 1-d integer array, got {rows.dtype} {rows.shape}")
            if len(rows) and (rows.min() < 0 or rows.max() >= len(flat)):
                raise ValueError(f"rows must index the {len(flat)} descriptors, got {rows.min()} ... {rows.max()}")
            self.rows = rows.astype(np.int32 if len(flat) < 2**31 else np.int64)
        n = len(flat) if rows is None else len(self.rows)
        if self.offsets[-1] != n:
            raise ValueError(f"offsets end at {self.offsets[-1]} but there are {n} descriptors")
        self.desc = np.ascontiguousarray(flat, dtype)  # no copy when already contiguous in this dtype
        self.dim = int(flat.shape[1])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def count(self, k: int) -> int:
        return int(self.offsets[k + 1] - self.offsets[k])

    def get(self, k: int) -> np.ndarray:
        """``[M_k x D]`` descriptors of keyframe ``k`` in the store's dtype (a view; a gathered copy with ``rows``)."""
        if self.rows is None:
            return self.desc[self.offsets[k]:self.offsets[k + 1]]
        return np.take(self.desc, self.rows[self.offsets[k]:self.offsets[k + 1]], axis=0)

    __getitem__ = get

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays the store holds (with ``rows``: including the caller's whole array it indexes)."""
        return int(self.desc.nbytes + self.offsets.nbytes + (0 if self.rows is None else self.rows.nbytes))


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.float32, np.float16):
        raise ValueError(f"dtype must be numpy.float32 or numpy.float16, got {dtype!r}")
    return dt


class KeyframeMatcher:
    """Mutual-NN + ratio matching of one query against several keyframes, with :func:`match_mutual_nn`'s results.

    The candidates' descriptors are gathered into one ``[K x M_max x D]`` fp32 buffer (widened exactly from a
    float16 store; rows beyond a keyframe's count are masked out); query rows are processed in blocks of
    ``block_rows``: one GEMM gives the block's ``[B x K x M_max]`` similarities, from which the per-keyframe best
    and second-best of each query row and the running per-column maxima (for the mutual check) are read while the
    block is in cache.

    Mutual check: query i and keyframe point j are mutual when ``S[i, j]`` equals the maximum of column j; when
    several query rows reach that maximum exactly (duplicate descriptors) the first one wins, as with
    ``np.argmax`` in :func:`match_mutual_nn`.

    Not thread-safe: the buffers are reused across calls (one matcher per localizing thread).

    Args:
        store: the map's keyframe descriptors.
        ratio, mutual, min_sim: as in :func:`match_mutual_nn`.
        block_rows: query rows per GEMM block; None: :attr:`BLOCK_ROWS` of the precision.
        threads: split the query rows over this many threads of a small pool, each running single-threaded BLAS
            on its own rows (results identical to one thread). BLAS's own threads are not used for this: OpenBLAS
            workers spin after each call and took the cores from ONNX Runtime (see ``limit_blas_threads``); pool
            threads sleep. 2 threads: 2000 query x 5000 map descriptors 20.3 -> 11.3 ms on the 2-core VM.
        precision: "float32" (default): similarities in float32, the reference results; "int8": one integer GEMM
            of quantised descriptors (:class:`Int8Product`), ~1.6x faster on the 2-core VM; a few per cent of the
            matches differ from float32's (ratio tests and mutual checks decided within the rounding error).
    """

    MIN_ROWS_PER_THREAD = 256  # fewer query rows than this per thread: not worth a hand-over
    # query rows per block by precision: the block's similarities (256 x 5 x 1000 fp32: 5 MB) stay in cache while
    # they are reduced; 2000 query x 5 x 1000 map descriptors, 2 threads, office queries: 15.7 ms with 1024 rows,
    # 12.0 with 256, 13.2 with 128; int8 9.3 / 7.8 / 7.4 ms (docs/performance.md)
    BLOCK_ROWS = {"float32": 256, "int8": 128}

    def __init__(self, store: KeyframeDescriptors, ratio: float = 0.8, mutual: bool = True, min_sim: float = -1.0,
                 block_rows: int | None = None, threads: int = 1, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if block_rows is None:
            block_rows = self.BLOCK_ROWS[precision]
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.precision = precision
        self._int8 = Int8Product() if precision == "int8" else None
        self.store = store
        self.ratio = float(ratio)
        self.mutual = bool(mutual)
        self.min_sim = float(min_sim)
        self.block_rows = int(block_rows)
        self.threads = int(threads)
        self._pool = None  # created on first use with threads > 1
        self._ref = np.zeros(0, np.float32)  # gathered candidates, flat [K * M_max * D]
        # per thread: one block of similarities, flat [block_rows * K * M_max]
        self._sims = [np.zeros(0, np.float32) for _ in range(self.threads)]

    def close(self) -> None:
        """Stop the thread pool (also done when the matcher is garbage-collected)."""
        pool, self._pool = getattr(self, "_pool", None), None  # None also when __init__ refused its arguments
        if pool is not None:
            pool.shutdown(wait=False)

    def __del__(self):
        self.close()

    @staticmethod
    def _buffer(buf: np.ndarray, n: int) -> np.ndarray:
        return buf if buf.size >= n else np.empty(max(n, int(buf.size * 1.25)), np.float32)

    def match(self, desc_q_ND: np.ndarray, keyframes) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(matches_K2, scores_K)]``, one pair per keyframe in ``keyframes``, equal to
        ``match_mutual_nn(desc_q_ND, store.get(k), ...)`` for each."""
        keyframes = [int(k) for k in keyframes]
        out: list = [None] * len(keyframes)
        N = len(desc_q_ND)
        big = [i for i, k in enumerate(keyframes) if self.store.count(k) >= 2]
        for i, k in enumerate(keyframes):  # 0 or 1 reference descriptors: the reference semantics (no 2nd NN)
            if i not in big:
                out[i] = match_mutual_nn(desc_q_ND, self.store.get(k), self.ratio, self.mutual, self.min_sim)
        if not big:
            return out
        if N == 0:
            for i in big:
                out[i] = (np.zeros((0, 2), np.int64), np.zeros((0,), np.float32))
            return out
        q = np.ascontiguousarray(desc_q_ND, np.float32)
        D = q.shape[1]
        if D != self.store.dim:
            raise ValueError(f"query descriptors have {D} dims, the map's have {self.store.dim}")
        counts = np.array([self.store.count(keyframes[i]) for i in big], np.int64)
        K, Mmax = len(big), int(counts.max())
        self._ref = self._buffer(self._ref, K * Mmax * D)
        ref = self._ref[:K * Mmax * D].reshape(K, Mmax, D)
        for j, i in enumerate(big):
            m = counts[j]
            np.copyto(ref[j, :m], self.store.get(keyframes[i]), casting="same_kind")
            ref[j, m:] = 0.0
        if self._int8 is not None:  # similarities as int32 products of quantised descriptors
            q, ref_T = self._int8.query(q), self._int8.reference(ref.reshape(K * Mmax, D))
            lowest, sim_dtype = np.int32(np.iinfo(np.int32).min), np.int32

            def similarities(t: int, r0: int, r1: int) -> np.ndarray:  # [r1 - r0 x K * Mmax]
                return self._int8.product(q[r0:r1], ref_T)
        else:
            ref_T = ref.reshape(K * Mmax, D).T
            lowest, sim_dtype = np.float32(-np.inf), np.float32

            def similarities(t: int, r0: int, r1: int) -> np.ndarray:  # in thread t's reused buffer
                self._sims[t] = self._buffer(self._sims[t], (r1 - r0) * K * Mmax)
                S = self._sims[t][:(r1 - r0) * K * Mmax].reshape(r1 - r0, K * Mmax)
                np.dot(q[r0:r1], ref_T, out=S)  # BLAS sgemm (np.matmul with out= is not BLAS here)
                return S
        padded = [(j, int(m)) for j, m in enumerate(counts) if m < Mmax]
        nn = np.empty((N, K), np.int64)
        s1 = np.empty((N, K), sim_dtype)
        s2 = np.empty((N, K), sim_dtype)
        n_parts = max(1, min(self.threads, N // self.MIN_ROWS_PER_THREAD))
        bounds = np.linspace(0, N, n_parts + 1).astype(int)
        parts = [(t, int(bounds[t]), int(bounds[t + 1])) for t in range(n_parts)]

        def rows(part) -> np.ndarray:  # query rows [lo, hi) -> nn / s1 / s2 rows; their per-column maxima
            t, lo, hi = part
            B = min(self.block_rows, hi - lo)
            col_max = np.full((K, Mmax), lowest, sim_dtype)
            for r0 in range(lo, hi, B):
                r1 = min(hi, r0 + B)
                S3 = similarities(t, r0, r1).reshape(r1 - r0, K, Mmax)
                for j, m in padded:
                    S3[:, j, m:] = lowest
                a = S3.argmax(axis=2)  # [b x K]
                nn[r0:r1] = a
                s1[r0:r1] = np.take_along_axis(S3, a[:, :, None], axis=2)[:, :, 0]
                if self.mutual:
                    np.maximum(col_max, S3.max(axis=0), out=col_max)
                np.put_along_axis(S3, a[:, :, None], lowest, axis=2)
                S3.max(axis=2, out=s2[r0:r1])
            return col_max

        if n_parts == 1:
            col_max = rows(parts[0])
        else:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="reloc_match")
            col_max = functools.reduce(np.maximum, self._pool.map(rows, parts))
        mutual_ok = (s1 == col_max[np.arange(K)[None, :], nn]) if self.mutual else None
        if self._int8 is not None:
            s1, s2 = self._int8.similarity(s1), self._int8.similarity(s2)
        d1 = np.sqrt(np.maximum(2.0 - 2.0 * s1, 0.0))
        d2 = np.sqrt(np.maximum(2.0 - 2.0 * s2, 0.0))
        keep = (d1 <= self.ratio * d2) & (s1 >= self.min_sim)  # [N x K]
        if self.mutual:
            keep &= mutual_ok
        conf_all = np.clip(1.0 - d1 / np.maximum(d2, 1e-6), 0.0, 1.0).astype(np.float32)
        for j, i in enumerate(big):
            qi = np.flatnonzero(keep[:, j])
            ri = nn[qi, j]
            if self.mutual and len(qi) > 1:  # exact ties: several rows reach a column's maximum, the first wins
                _, first = np.unique(ri, return_index=True)
                if len(first) < len(ri):
                    first.sort()
                    qi, ri = qi[first], ri[first]
            out[i] = (np.stack([qi, ri], axis=1).astype(np.int64), conf_all[qi, j])
        return out


def int8_unavailable() -> str | None:
    """Why ``precision="int8"`` cannot run here (it builds its ONNX Runtime graph with the onnx package), or None."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"matching_precision 'int8' needs {' and '.join(missing)}: pip install 'reloc_ros[cpu]', or use "
                f"matching_precision float32")
    return None


class Int8Product:
    """Similarities of unit descriptors as one integer GEMM (ONNX Runtime's MatMulInteger: AVX-512 VNNI / AVX2 u8 x s8
    kernels, ~4x the fp32 GEMM's throughput on the 2-core VM).

    Query components x -> ``round(QUERY_SCALE x) + 128`` (uint8, zero point 128), map components ->
    ``round(MAP_SCALE x)`` clipped to [-64, 64] (int8); the product is an int32 proportional to the cosine
    similarity (:meth:`similarity` divides). The map side uses 7 bits so that AVX2's u8 x s8 pair sums (at most
    255 x 64 x 2 < 2^15) never saturate on CPUs without VNNI. Unit 64-d descriptors of the learned extractor have
    components within +-0.54 (max of a 118k-descriptor map: 0.534); larger ones are clipped. The similarity's
    rounding error is ~0.003 (1 sigma), so a ratio test or mutual check decided within that margin can differ from
    float32's; the recall figures of this setting are in docs/RESULTS.md ("Performance").
    """

    QUERY_SCALE = 239.0
    MAP_SCALE = 119.0

    def __init__(self):
        why = int8_unavailable()
        if why:
            raise ValueError(why)
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["q", "r", "q_zero"], ["s"])], "int8_similarity",
            [helper.make_tensor_value_info("q", TensorProto.UINT8, ["N", "D"]),
             helper.make_tensor_value_info("r", TensorProto.INT8, ["D", "M"])],
            [helper.make_tensor_value_info("s", TensorProto.INT32, ["N", "M"])],
            initializer=[numpy_helper.from_array(np.array(128, np.uint8), "q_zero")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1  # the matcher's own pool splits the rows
        so.inter_op_num_threads = 1
        self._session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def query(self, q_ND: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(q_ND * self.QUERY_SCALE) + 128.0, 0, 255).astype(np.uint8)

    def reference(self, r_MD: np.ndarray) -> np.ndarray:
        """``[D x M]`` int8 (the transposed layout MatMulInteger takes). Done per query on the gathered candidates
        (~0.3 ms for 5 x 1000 x 64): an int8 copy of the whole map made at load would cost half the memory of its
        float16 descriptors again."""
        return np.ascontiguousarray(np.clip(np.rint(r_MD * self.MAP_SCALE), -64, 64).astype(np.int8).T)

    def product(self, q_u8: np.ndarray, r_s8: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"q": q_u8, "r": r_s8})[0]

    def similarity(self, s: np.ndarray) -> np.ndarray:
        return (s * (1.0 / (self.QUERY_SCALE * self.MAP_SCALE))).astype(np.float32)
