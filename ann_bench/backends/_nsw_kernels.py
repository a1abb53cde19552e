"""numba kernels of the Navigable Small World graph (see :mod:`ann_bench.backends.nsw`).

Importing this module needs numba; :mod:`ann_bench.backends.nsw` imports it lazily, in ``build``/``load``.

Conventions, shared by every kernel:

- ``X`` (n, d) float32, C-contiguous: the vectors as the graph sees them (normalised for ``angular``).
- ``kind``: ``KIND_L2`` (squared L2, for ``euclidean`` and ``angular``) or ``KIND_DOT`` (-dot, for ``ip``);
  smaller is nearer for both.
- The graph is ``start`` (n,) int64, ``deg`` (n,) int32 and ``adj`` int32: the neighbours of node ``v`` are
  ``adj[start[v] : start[v] + deg[v]]``. While building, each node owns a block of a growable pool with room
  to spare (capacity doubling); after building, the lists are compacted into CSR form (``indptr``, ``adj``).
- A search keeps one sorted list of at most ``ef`` (distance, id, expanded) entries and always expands the
  nearest unexpanded entry; it stops when every entry is expanded. That is the ef-bounded candidate queue of
  Malkov et al. (the search stops when the nearest candidate is farther than the ef-th result) in the
  array form DiskANN uses: no heaps, one contiguous buffer.
- The visited set is an int32 array of stamps: node ``v`` is visited in the current search iff
  ``visited[v] == stamp``; a new search takes a new stamp, so nothing is cleared between searches.

Every kernel is ``nogil``, so Python threads run them in parallel; ``cache=True`` keeps the compiled code on
disk, so only the first use on a machine pays for compilation.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

KIND_L2 = 0
KIND_DOT = 1

# Fast-math for the distance loops (reassociation lets LLVM vectorise the float32 sums), without the
# no-NaN/no-inf assumptions, so comparisons stay exact.
_FASTMATH = {"nsz", "arcp", "contract", "reassoc"}
_STAMP_LIMIT = 2_000_000_000
_HASH_TRIES = 8  # random entry points drawn per restart before giving up on one already visited
_CHUNK = 32  # neighbours gathered (and prefetched) before their distances are computed


@intrinsic
def _prefetch_row(typingctx, arr, row):
    """Hint the CPU to fetch the first cache line of row ``row`` of the 2-D array ``arr`` (llvm.prefetch).

    Gathering a node's unvisited neighbours and prefetching their vectors before computing any distance
    overlaps the memory latency of the random row accesses, as hnswlib does with _mm_prefetch.
    """
    sig = types.void(arr, row)

    def codegen(context, builder, signature, args):
        aryty, rowty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], rowty, types.intp)
        zero = context.get_constant(types.intp, 0)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [i, zero], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        # read access, high temporal locality, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _dist(X, i, q, kind):
    """Distance between row ``i`` of X (n, d) and the query q (d,): squared L2 or -dot, float32."""
    d = X.shape[1]
    s = np.float32(0.0)
    if kind == KIND_L2:
        for j in range(d):
            t = q[j] - X[i, j]
            s += t * t
    else:
        for j in range(d):
            s += q[j] * X[i, j]
        s = -s
    return s


@njit(cache=True, nogil=True)
def _insert(Ld, Li, Lx, size, cap, d, node):
    """Insert (d, node, unexpanded) into the sorted list (Ld, Li, Lx) of ``size`` <= ``cap`` entries.

    When the list is full its last entry is dropped (the caller checked that d beats it). Equal distances
    keep insertion order. Returns (position, new size).
    """
    pos = size if size < cap else cap - 1
    while pos > 0 and Ld[pos - 1] > d:
        Ld[pos] = Ld[pos - 1]
        Li[pos] = Li[pos - 1]
        Lx[pos] = Lx[pos - 1]
        pos -= 1
    Ld[pos] = d
    Li[pos] = node
    Lx[pos] = 0
    return pos, min(size + 1, cap)


@njit(cache=True, nogil=True)
def _beam(X, kind, q, start, deg, adj, entry, ef, visited, stamp, Ld, Li, Lx, buf):
    """ef-bounded best-first search from ``entry``; fills Ld/Li (sorted, nearest first), returns the count.

    Nodes already stamped visited (by an earlier restart of the same search) are not evaluated again.
    ``buf`` is scratch of at least _CHUNK int32.
    """
    visited[entry] = stamp
    Ld[0] = _dist(X, entry, q, kind)
    Li[0] = entry
    Lx[0] = 0
    size = 1
    cur = 0
    while cur < size:
        node = Li[cur]
        Lx[cur] = 1
        nxt = cur + 1
        p = start[node]
        end = p + deg[node]
        while p < end:
            # Gather up to _CHUNK unvisited neighbours, prefetching their rows, then evaluate them.
            cnt = 0
            while p < end and cnt < _CHUNK:
                nb = adj[p]
                p += 1
                if visited[nb] != stamp:
                    visited[nb] = stamp
                    _prefetch_row(X, nb)
                    buf[cnt] = nb
                    cnt += 1
            for t in range(cnt):
                nb = buf[t]
                d = _dist(X, nb, q, kind)
                if size == ef and d >= Ld[ef - 1]:
                    continue
                pos, size = _insert(Ld, Li, Lx, size, ef, d, nb)
                if pos < nxt:
                    nxt = pos
        while nxt < size and Lx[nxt] != 0:
            nxt += 1
        cur = nxt
    return size


@njit(cache=True, nogil=True)
def _mix(h):
    """splitmix64 finaliser: a well-spread 64-bit hash of the 64-bit integer h."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@njit(cache=True, nogil=True)
def _query_hash(qbits, seed):
    """FNV-1a over the float32 bit patterns of one query (d,) uint32, mixed with the seed.

    Random entry points drawn from this hash depend on the query and the seed only, not on the batch the
    query came in or the thread that served it.
    """
    h = np.uint64(0xCBF29CE484222325) ^ _mix(np.uint64(seed))
    for j in range(qbits.shape[0]):
        h = (h ^ np.uint64(qbits[j])) * np.uint64(0x100000001B3)
    return h


@njit(cache=True, nogil=True)
def _multi_search(X, kind, q, start, deg, adj, entries, n_entries, ef, visited, stamp,
                  Ld, Li, Lx, Gd, Gi, Gx, buf):
    """Malkov et al.'s multi-search: one ef-bounded search per entry point, sharing the visited set;
    the results are merged into Gd/Gi (sorted, at most ef). Returns the number of merged results."""
    if n_entries == 1:
        size = _beam(X, kind, q, start, deg, adj, entries[0], ef, visited, stamp, Ld, Li, Lx, buf)
        for j in range(size):
            Gd[j] = Ld[j]
            Gi[j] = Li[j]
        return size
    gsize = 0
    for r in range(n_entries):
        e = entries[r]
        if e < 0 or visited[e] == stamp:
            continue
        size = _beam(X, kind, q, start, deg, adj, e, ef, visited, stamp, Ld, Li, Lx, buf)
        for j in range(size):
            if gsize == ef and Ld[j] >= Gd[ef - 1]:
                break  # Ld is sorted: nothing after j gets in either
            _, gsize = _insert(Gd, Gi, Gx, gsize, ef, Ld[j], Li[j])
    return gsize


@njit(cache=True, nogil=True)
def search_batch(X, kind, Q, Qbits, start, deg, adj, ids, seed, first_entry, m, ef, k, visited, state, out_d,
                 out_i):
    """k nearest neighbours of each query: m restarts, candidate lists of max(ef, k).

    X (n, d) float32; Q (nq, d) float32 and Qbits = Q.view(uint32); start (n,) int64, deg (n,) int32, adj
    int32: the graph; ids (n,) int64: the id reported for each node. Restart 0 starts at node 0 when
    ``first_entry``; every other restart starts at a random node drawn from a hash of (seed, query bits,
    restart), so the results of a query do not depend on its batch or thread. visited (n,) int32 stamps
    and state (1,) int64 (the last stamp used) belong to the calling thread. Writes out_d (nq, k) float32
    native distances (squared L2 or -dot) and out_i (nq, k) int64, -1 / +inf where fewer than k were found.
    """
    n = X.shape[0]
    nq = Q.shape[0]
    cap = max(ef, k)
    Ld = np.empty(cap, np.float32)
    Li = np.empty(cap, np.int32)
    Lx = np.empty(cap, np.uint8)
    Gd = np.empty(cap, np.float32)
    Gi = np.empty(cap, np.int32)
    Gx = np.empty(cap, np.uint8)
    buf = np.empty(_CHUNK, np.int32)
    entries = np.empty(m, np.int64)
    for qi in range(nq):
        for j in range(k):
            out_d[qi, j] = np.inf
            out_i[qi, j] = -1
        if n == 0:
            continue
        stamp = state[0] + 1
        if stamp >= _STAMP_LIMIT:
            visited[:] = 0
            stamp = 1
        state[0] = stamp
        h = _query_hash(Qbits[qi], seed)
        for r in range(m):
            entries[r] = -1
            if r == 0 and first_entry:
                entries[r] = 0
                continue
            for t in range(_HASH_TRIES):  # a few draws to avoid repeating an entry point
                e = np.int64(_mix(h + np.uint64(r * _HASH_TRIES + t + 1)) % np.uint64(n))
                dup = False
                for s in range(r):
                    if entries[s] == e:
                        dup = True
                if not dup:
                    entries[r] = e
                    break
        size = _multi_search(X, kind, Q[qi], start, deg, adj, entries, m, cap, visited, stamp,
                             Ld, Li, Lx, Gd, Gi, Gx, buf)
        for j in range(min(size, k)):
            out_d[qi, j] = Gd[j]
            out_i[qi, j] = ids[Gi[j]]


@njit(cache=True, nogil=True)
def _append(pool, used, start, cap, deg, v, value):
    """Append ``value`` to node v's list, moving the list to a block twice as large when it is full.

    The pool itself doubles when it runs out; returns (pool, used). Nothing is ever removed (no pruning).
    """
    if deg[v] == cap[v]:
        new_cap = 2 * cap[v]
        if used + new_cap > pool.shape[0]:
            bigger = np.empty(max(2 * pool.shape[0], used + new_cap), np.int32)
            bigger[:used] = pool[:used]
            pool = bigger
        s = start[v]
        for j in range(deg[v]):
            pool[used + j] = pool[s + j]
        start[v] = used
        cap[v] = new_cap
        used += new_cap
    pool[start[v] + deg[v]] = value
    deg[v] += 1
    return pool, used


@njit(cache=True, nogil=True)
def _new_block(pool, used, start, cap, i, cap0):
    """Give node i an empty list of capacity cap0 at the end of the pool (growing it); returns (pool, used)."""
    if used + cap0 > pool.shape[0]:
        bigger = np.empty(max(2 * pool.shape[0], used + cap0), np.int32)
        bigger[:used] = pool[:used]
        pool = bigger
    start[i] = used
    cap[i] = cap0
    return pool, used + cap0


@njit(cache=True, nogil=True)
def _insertion_scratch(ef, w):
    """The buffers of one insertion search: its list (Ld, Li, Lx) and merged list (Gd, Gi, Gx) of ef entries,
    the gather buffer, and the w entry points."""
    return (np.empty(ef, np.float32), np.empty(ef, np.int32), np.empty(ef, np.uint8), np.empty(ef, np.float32),
            np.empty(ef, np.int32), np.empty(ef, np.uint8), np.empty(_CHUNK, np.int32), np.empty(w, np.int64))


@njit(cache=True, nogil=True)
def new_graph(n, f):
    """An empty growable graph of n nodes: (pool, start, cap, deg); each node gets its block when inserted."""
    cap0 = max(2, 2 * f)
    return (np.empty(max(16, n * cap0), np.int32), np.zeros(n, np.int64), np.zeros(n, np.int32),
            np.zeros(n, np.int32))


@njit(cache=True, nogil=True)
def insert_range(X, kind, f, w, ef_construction, first_entry, U, pool, used, start, cap, deg, visited, lo, hi):
    """Insert nodes lo..hi-1 one by one, in id order: node i is searched for among nodes 0..i-1 with w
    restarts and candidate lists of max(ef_construction, f), then linked both ways to the f nearest found.
    Restart r starts at node floor(U[i, r] * i) (U (n, w) uniform in [0, 1)), except restart 0, which starts
    at node 0 when ``first_entry``. Returns (pool, used)."""
    cap0 = max(2, 2 * f)
    ef = max(ef_construction, f)
    Ld, Li, Lx, Gd, Gi, Gx, buf, entries = _insertion_scratch(ef, w)
    for i in range(lo, hi):
        pool, used = _new_block(pool, used, start, cap, i, cap0)
        if i == 0:
            continue
        for r in range(w):
            entries[r] = min(np.int64(U[i, r] * i), i - 1)
        if first_entry:
            entries[0] = 0
        size = _multi_search(X, kind, X[i], start, deg, pool, entries, w, ef, visited, i,
                             Ld, Li, Lx, Gd, Gi, Gx, buf)
        for j in range(min(size, f)):
            v = Gi[j]
            pool, used = _append(pool, used, start, cap, deg, i, v)
            pool, used = _append(pool, used, start, cap, deg, v, i)
    return pool, used


@njit(cache=True, nogil=True)
def search_range(X, kind, f, w, ef_construction, first_entry, U, pool, start, deg, visited, lo, hi, frozen,
                 out, out_n, base):
    """The insertion searches of nodes lo..hi-1 among nodes 0..frozen-1 only (the graph as it stood before
    their batch; it is not modified here, so threads run this on disjoint ranges at once, each with its own
    ``visited``). The f nearest of node i go to out[i - base, :out_n[i - base]], nearest first. Restart r
    starts at node floor(U[i, r] * frozen); restart 0 at node 0 when ``first_entry``."""
    ef = max(ef_construction, f)
    Ld, Li, Lx, Gd, Gi, Gx, buf, entries = _insertion_scratch(ef, w)
    for i in range(lo, hi):
        for r in range(w):
            entries[r] = min(np.int64(U[i, r] * frozen), frozen - 1)
        if first_entry:
            entries[0] = 0
        size = _multi_search(X, kind, X[i], start, deg, pool, entries, w, ef, visited, i,
                             Ld, Li, Lx, Gd, Gi, Gx, buf)
        m = min(size, f)
        out_n[i - base] = m
        for j in range(m):
            out[i - base, j] = Gi[j]


@njit(cache=True, nogil=True)
def link_range(pool, used, start, cap, deg, f, lo, hi, out, out_n, base):
    """Insert nodes lo..hi-1 in id order with the neighbours :func:`search_range` found: each gets its block,
    then its links both ways. Returns (pool, used)."""
    cap0 = max(2, 2 * f)
    for i in range(lo, hi):
        pool, used = _new_block(pool, used, start, cap, i, cap0)
        for j in range(out_n[i - base]):
            v = out[i - base, j]
            pool, used = _append(pool, used, start, cap, deg, i, v)
            pool, used = _append(pool, used, start, cap, deg, v, i)
    return pool, used


@njit(cache=True, nogil=True)
def to_csr(pool, start, deg):
    """The growable graph compacted: indptr (n + 1,) int64 and adj (indptr[n],) int32, each list in the order
    its links were made (own links nearest first, then the links of later nodes)."""
    n = start.shape[0]
    indptr = np.zeros(n + 1, np.int64)
    for v in range(n):
        indptr[v + 1] = indptr[v] + deg[v]
    adj = np.empty(indptr[n], np.int32)
    for v in range(n):
        s = start[v]
        o = indptr[v]
        for j in range(deg[v]):
            adj[o + j] = pool[s + j]
    return indptr, adj


@njit(cache=True, nogil=True)
def build_graph(X, kind, f, w, ef_construction, first_entry, U):
    """The one-by-one (sequential) build of a Navigable Small World graph over the rows of X (n, d): see
    :func:`insert_range`. Returns its CSR form (indptr, adj)."""
    n = X.shape[0]
    pool, start, cap, deg = new_graph(n, f)
    visited = np.zeros(n, np.int32)
    pool, used = insert_range(X, kind, f, w, ef_construction, first_entry, U, pool, 0, start, cap, deg, visited,
                              0, n)
    return to_csr(pool, start, deg)


@njit(cache=True, nogil=True)
def bfs_order(indptr, adj, root):
    """Breadth-first order of the graph from ``root``: perm (n,) int64, perm[new] = old.

    Nodes the search cannot reach from the root come last, in id order. Storing the vectors in this order
    puts the neighbours of the first nodes a search expands side by side in memory.
    """
    n = indptr.shape[0] - 1
    perm = np.empty(n, np.int64)
    seen = np.zeros(n, np.uint8)
    head = 0
    tail = 0
    scan = 0  # every id below scan is seen
    if n > 0:
        perm[0] = root
        seen[root] = 1
        tail = 1
    while tail < n:
        if head == tail:  # the rest is unreachable from the root: continue from the smallest unseen id
            while seen[scan] != 0:
                scan += 1
            seen[scan] = 1
            perm[tail] = scan
            tail += 1
        v = perm[head]
        head += 1
        for p in range(indptr[v], indptr[v + 1]):
            u = adj[p]
            if seen[u] == 0:
                seen[u] = 1
                perm[tail] = u
                tail += 1
    return perm


@njit(cache=True, nogil=True)
def permute_graph(indptr, adj, perm):
    """The graph (indptr (n + 1,) int64, adj int32) relabelled by perm (perm[new] = old).

    Each neighbour list comes out sorted by new id, so a node's neighbours are read in memory order.
    """
    n = perm.shape[0]
    inv = np.empty(n, np.int64)
    for new in range(n):
        inv[perm[new]] = new
    out_ptr = np.zeros(n + 1, np.int64)
    for new in range(n):
        old = perm[new]
        out_ptr[new + 1] = out_ptr[new] + indptr[old + 1] - indptr[old]
    out = np.empty(adj.shape[0], np.int32)
    for new in range(n):
        old = perm[new]
        o = out_ptr[new]
        d = indptr[old + 1] - indptr[old]
        for j in range(d):
            out[o + j] = inv[adj[indptr[old] + j]]
        out[o : o + d].sort()
    return out_ptr, out
