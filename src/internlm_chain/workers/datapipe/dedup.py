"""De-duplication at three scales: exact documents, near-duplicate documents (MinHash-LSH), and lines
repeated across the corpus.

Out of core: each shard writes its keys to .npy files; the decision reads one band (and, for large
corpora, one key-range partition of it) at a time, spills candidate pairs to disk, then verifies
them against the stored signatures and joins clusters with a union-find over dense document
indices. Peak memory: 8 bytes x documents (union-find) + 16 bytes x documents / partitions (one
band partition) + one pair chunk (16 MiB) + 64 MiB of gathered signatures while verifying;
signatures stay on disk (memory-mapped).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from .minhash import OPHMinHash, band_keys_many, doc_word_codes, signatures, similarity, word_codes

PAIR_CHUNK = 1 << 20
VERIFY_CHUNK = 1 << 15  # 64 MiB of gathered signatures
MEM_BUDGET = 512 << 20
SIG_BATCH = 256
LOW16_BUDGET = 256 << 20  # 2 B x documents x num_perm: ~1M documents at 128 permutations


def _h64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


def exact_key(text: str, codes: tuple[np.ndarray, np.ndarray] | None = None) -> int:
    """Hash of the lower-cased letters and digits only (case, spacing and punctuation folded away)."""
    c32, isword = codes if codes is not None else word_codes(text)
    return _h64_buffer(c32[isword])


try:
    from xxhash import xxh3_64_intdigest as _h64_buffer  # ~15x faster than blake2b on a document
except ImportError:  # pragma: no cover - the data runtime ships xxhash
    def _h64_buffer(buf) -> int:
        return int.from_bytes(hashlib.blake2b(memoryview(buf).cast("B"), digest_size=8).digest(), "little")


def line_key(line: str) -> int:
    return _h64(" ".join(line.lower().split()))


# ---- per-shard collectors ------------------------------------------------------------------------
class ExactCollector:
    def __init__(self, **_):
        self.keys: list[int] = []

    def add(self, doc: dict) -> None:
        self.keys.append(exact_key(doc["text"], doc_word_codes(doc)))

    def save(self, prefix: str) -> None:
        np.save(prefix + ".keys.npy", np.asarray(self.keys, dtype=np.uint64).reshape(-1, 1))


class NearCollector:
    def __init__(self, num_perm=128, bands=32, char_ngram=5, word_ngram=3, **_):
        if num_perm % bands:
            raise ValueError(f"dedup_near: bands ({bands}) must divide num_perm ({num_perm})")
        self.mh = OPHMinHash(num_perm, char_ngram, word_ngram)
        self.bands = bands
        self.sigs: list[np.ndarray] = []
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, doc: dict) -> None:
        # signatures are computed SIG_BATCH documents at a time: one set of numpy calls per batch
        self.pending.append(doc_word_codes(doc))
        if len(self.pending) >= SIG_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.sigs.append(signatures(self.mh, self.pending))
            self.pending = []

    def save(self, prefix: str) -> None:
        self._flush()
        sigs = np.concatenate(self.sigs) if self.sigs else np.zeros((0, self.mh.k), dtype=np.uint64)
        keys = band_keys_many(sigs, self.bands)
        np.save(prefix + ".sig.npy", sigs)
        np.save(prefix + ".keys.npy", keys)


class LineCollector:
    def __init__(self, min_line_chars=8, **_):
        self.min_line_chars = min_line_chars
        self.hashes: list[int] = []
        self.rows: list[int] = []
        self.n = 0

    def add(self, doc: dict) -> None:
        seen = set()
        for line in doc["text"].split("\n"):
            if len(line.strip()) >= self.min_line_chars:
                seen.add(line_key(line))
        self.hashes.extend(seen)
        self.rows.extend([self.n] * len(seen))
        self.n += 1

    def save(self, prefix: str) -> None:
        np.save(prefix + ".lines.npy", np.asarray(self.hashes, dtype=np.uint64))
        np.save(prefix + ".rows.npy", np.asarray(self.rows, dtype=np.int64))


# ---- corpus-wide decisions -------------------------------------------------------------------------
class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller index (earlier document) stays the representative
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb

    def roots(self) -> np.ndarray:
        p = self.parent
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q


def _candidate_pairs(key_files: list[str], offsets: np.ndarray, dropped: np.ndarray, spill_dir: str,
                     partitions: int) -> list[str]:
    """Write (doc, representative) candidate pairs to .npy chunks, band by band; return the files."""
    os.makedirs(spill_dir, exist_ok=True)
    mmaps = [np.load(f, mmap_mode="r") for f in key_files]
    n_bands = next((m.shape[1] for m in mmaps if m.ndim == 2 and m.shape[0]), 1)
    n_total = int(offsets[-1])
    if partitions <= 0:
        partitions = max(1, int(np.ceil(n_total * 16 / MEM_BUDGET)))
    out_files: list[str] = []
    buf: list[np.ndarray] = []
    buffered = 0

    def flush():
        nonlocal buf, buffered
        if buf:
            path = os.path.join(spill_dir, f"pairs-{len(out_files):05d}.npy")
            np.save(path, np.concatenate(buf))
            out_files.append(path)
            buf, buffered = [], 0

    for band in range(n_bands):
        for part in range(partitions):
            keys_l, idx_l = [], []
            for s, m in enumerate(mmaps):
                if not m.shape[0]:
                    continue
                col = np.asarray(m[:, band])
                idx = np.arange(offsets[s], offsets[s + 1], dtype=np.int64)
                sel = ~dropped[idx]
                if partitions > 1:
                    sel &= (col % np.uint64(partitions)) == part
                keys_l.append(col[sel])
                idx_l.append(idx[sel])
            if not keys_l:
                continue
            keys = np.concatenate(keys_l)
            idx = np.concatenate(idx_l)
            if len(keys) < 2:
                continue
            order = np.lexsort((idx, keys))
            keys, idx = keys[order], idx[order]
            new_group = np.concatenate(([True], keys[1:] != keys[:-1]))
            rep = idx[np.maximum.accumulate(np.where(new_group, np.arange(len(idx)), 0))]
            pair = np.flatnonzero(~new_group)
            if len(pair):
                buf.append(np.stack([idx[pair], rep[pair]], axis=1))
                buffered += len(pair)
                if buffered >= PAIR_CHUNK:
                    flush()
    flush()
    return out_files


def _gather(sig_mmaps, offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    shard = np.searchsorted(offsets, idx, side="right") - 1
    out = np.empty((len(idx), sig_mmaps[0].shape[1] if sig_mmaps else 0), dtype=np.uint64)
    for s in np.unique(shard):
        sel = shard == s
        # fancy indexing through np.memmap's __getitem__ is ~10x slower than through a plain view
        out[sel] = np.asarray(sig_mmaps[s])[idx[sel] - offsets[s]]
    return out


def _unique_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    """`np.unique(pairs, axis=0)` (same rows, same order) through one int64 per pair: ~20x faster."""
    if len(pairs) == 0 or n >= 1 << 31:
        return np.unique(pairs, axis=0)
    packed = np.sort(pairs[:, 0] * np.int64(n) + pairs[:, 1])
    packed = packed[np.concatenate(([True], packed[1:] != packed[:-1]))]
    return np.stack([packed // n, packed % n], axis=1)


def _low16(sig_mmaps, n: int) -> np.ndarray | None:
    """The low 16 bits of every signature value in memory (2 B per value), when that stays within
    LOW16_BUDGET; None otherwise (candidates are then verified on the memory-mapped signatures only)."""
    k = next((m.shape[1] for m in sig_mmaps if m.ndim == 2), 0)
    if not k or n * k * 2 > LOW16_BUDGET:
        return None
    low = np.empty((n, k), dtype=np.uint16)
    row = 0
    for m in sig_mmaps:
        for i in range(0, len(m), VERIFY_CHUNK):
            part = np.asarray(m[i:i + VERIFY_CHUNK])
            low[row:row + len(part)] = part.astype(np.uint16)  # truncation keeps the low 16 bits
            row += len(part)
    return low


def cluster(key_files: list[str], offsets: np.ndarray, dropped: np.ndarray, spill_dir: str,
            sig_files: list[str] | None = None, threshold: float = 0.0, partitions: int = 0) -> np.ndarray:
    """The representative (smallest index) of each document's duplicate cluster."""
    n = int(offsets[-1])
    uf = UnionFind(n)
    sig_mmaps = [np.load(f, mmap_mode="r") for f in sig_files] if sig_files else None
    low = _low16(sig_mmaps, n) if sig_mmaps else None
    for path in _candidate_pairs(key_files, offsets, dropped, spill_dir, partitions):
        pairs = _unique_pairs(np.load(path), n)
        if sig_mmaps is not None and len(pairs):
            if low is not None:
                # equal 64-bit values have equal low 16 bits, so this only drops pairs the full check
                # would drop too, while reading 4x fewer bytes; few random pairs survive it
                k = low.shape[1]
                keep = np.zeros(len(pairs), dtype=bool)
                for i in range(0, len(pairs), VERIFY_CHUNK):
                    part = pairs[i:i + VERIFY_CHUNK]
                    keep[i:i + VERIFY_CHUNK] = (np.count_nonzero(low[part[:, 0]] == low[part[:, 1]], axis=1) / k
                                                >= threshold)
                pairs = pairs[keep]
            # verified in slices: two gathered signature rows cost 2 KB per pair
            keep = np.zeros(len(pairs), dtype=bool)
            for i in range(0, len(pairs), VERIFY_CHUNK):
                part = pairs[i:i + VERIFY_CHUNK]
                a = _gather(sig_mmaps, offsets, part[:, 0])
                b = _gather(sig_mmaps, offsets, part[:, 1])
                keep[i:i + VERIFY_CHUNK] = similarity(a, b) >= threshold
            pairs = pairs[keep]
        for x, y in pairs.tolist():
            uf.union(x, y)
        os.remove(path)
    return uf.roots()


def frequent_lines(line_files: list[str], row_files: list[str], offsets: np.ndarray, dropped: np.ndarray,
                   min_docs: int, partitions: int = 0) -> np.ndarray:
    """Sorted hashes of lines that occur in at least `min_docs` surviving documents."""
    total = sum(int(np.load(f, mmap_mode="r").shape[0]) for f in line_files)
    if partitions <= 0:
        partitions = max(1, int(np.ceil(total * 8 / MEM_BUDGET)))
    found = []
    for part in range(partitions):
        chunks = []
        for s, (lf, rf) in enumerate(zip(line_files, row_files, strict=False)):
            h = np.load(lf, mmap_mode="r")
            if not h.shape[0]:
                continue
            rows = np.load(rf, mmap_mode="r")
            keep = ~dropped[offsets[s] + np.asarray(rows)]
            if partitions > 1:
                keep &= (np.asarray(h) % np.uint64(partitions)) == part
            chunks.append(np.asarray(h)[keep])
        if chunks:
            vals, counts = np.unique(np.concatenate(chunks), return_counts=True)
            found.append(vals[counts >= min_docs])
    return np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.uint64)


def remove_lines(text: str, frequent: set[int], min_line_chars: int) -> tuple[str, int]:
    kept, removed = [], 0
    for line in text.split("\n"):
        if len(line.strip()) >= min_line_chars and line_key(line) in frequent:
            removed += 1
        else:
            kept.append(line)
    return "\n".join(kept).strip(), removed
