#!/usr/bin/env python3
"""Independent RFC 6962 / RFC 9162 Merkle proof vectors for tests/it/merkle.rs.

Standalone (Python 3 standard library only) and deliberately written from the RFC text, not
from src/core/merkle.rs: the tree hash MTH, the inclusion proof PATH and the consistency proof
PROOF/SUBPROOF are the recursive definitions of RFC 6962 section 2.1, evaluated over the list of
leaf data. Verification here is recursive too (rebuild the root(s) from the proof by walking the
same recursion), a different algorithm from the bit-walking RFC 9162 verifier in the crate.

Run from anywhere:  python3 tests/it/vectors/gen_merkle.py
Writes merkle-proofs.json next to this script (deterministic: rerunning gives the same bytes).

Positive proofs are stored as the leaf ranges [lo, hi) whose MTH they list, with one table of
[lo, hi, hex] per tree: listing all 6,551 hashes of the 37-leaf tree's proofs inline would be
~440 KB on its own. The generator checks every range list against the hash list PATH / PROOF
compute. Negative cases carry literal hex.

Expected-failure categories of the negative cases follow RFC 9162 sections 2.1.3.2 / 2.1.4.2
with the edge cases src/core/ledger/FORMAT.md names, checked in this order:
  inclusion:   index_out_of_range (index >= size), wrong_length (the proof has not exactly
               len(PATH(index, size)) hashes: too short, or not fully consumed), root_mismatch.
  consistency: bad_sizes (size1 = 0 or size1 > size2), non_empty_proof (size1 = size2 and the
               proof is not empty), root_mismatch (size1 = size2 and the roots differ),
               empty_proof (size1 < size2 and the proof is empty), wrong_length (not exactly
               len(PROOF(size1, size2)) hashes), root_mismatch (either recomputed root differs).
"""

import hashlib
import json
import os
import sys

# RFC 6962 / Certificate Transparency reference test leaves.
CT_LEAVES_HEX = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
CT_ROOT_1 = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
CT_ROOT_8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
# The well-known CT roots for the other sizes of the same leaves (a further check, not required).
CT_ROOTS_KNOWN = {
    1: CT_ROOT_1,
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: CT_ROOT_8,
}

# Published CT / transparency-dev proofs over the same leaves (anchors, beyond the roots).
CT_INCLUSION_KNOWN = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
}
CT_CONSISTENCY_KNOWN = {
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
    (6, 7): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}

BIG_N = 37


def sha256(data):
    return hashlib.sha256(data).digest()


def leaf_hash(data):
    """RFC 6962 section 2.1: MTH({d0}) = SHA-256(0x00 || d0)."""
    return sha256(b"\x00" + data)


def node(left, right):
    return sha256(b"\x01" + left + right)


def split(n):
    """The largest power of two smaller than n (n > 1)."""
    assert n > 1
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d):
    """RFC 6962 section 2.1, Merkle Tree Hash over the list of leaf data d."""
    n = len(d)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return leaf_hash(d[0])
    k = split(n)
    return node(mth(d[:k]), mth(d[k:]))


def path(m, d):
    """RFC 6962 section 2.1.1, PATH(m, D[n]): the audit path of leaf m, deepest sibling first."""
    n = len(d)
    if n == 1:
        assert m == 0
        return []
    k = split(n)
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m, d, b):
    """RFC 6962 section 2.1.2, SUBPROOF(m, D[n], b)."""
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = split(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def proof(m, d):
    """RFC 6962 section 2.1.2, PROOF(m, D[n]) = SUBPROOF(m, D[n], true), for 0 < m <= n."""
    assert 0 < m <= len(d)
    return subproof(m, d, True)


# ---- Recursive verification (used to classify the negative cases and to self-check) ----------


def path_len(m, n):
    if n == 1:
        return 0
    k = split(n)
    return 1 + (path_len(m, k) if m < k else path_len(m - k, n - k))


def subproof_len(m, n, b):
    if m == n:
        return 0 if b else 1
    k = split(n)
    return 1 + (subproof_len(m, k, b) if m <= k else subproof_len(m - k, n - k, False))


def root_from_path(m, n, leaf, p):
    """Rebuilds MTH from a PATH: the last hash is the sibling at the top split."""
    if n == 1:
        assert not p
        return leaf
    k = split(n)
    if m < k:
        return node(root_from_path(m, k, leaf, p[:-1]), p[-1])
    return node(p[-1], root_from_path(m - k, n - k, leaf, p[:-1]))


def roots_from_subproof(m, n, b, old_root, p):
    """Rebuilds (hash of the old-tree part, hash of this subtree) from a SUBPROOF."""
    if m == n:
        if b:
            # The whole subtree is the old tree D[0:m] itself: the verifier knows its hash.
            assert not p
            return old_root, old_root
        assert len(p) == 1
        return p[0], p[0]
    k = split(n)
    if m <= k:
        o, s = roots_from_subproof(m, k, b, old_root, p[:-1])
        return o, node(s, p[-1])
    o, s = roots_from_subproof(m - k, n - k, False, old_root, p[:-1])
    return node(p[-1], o), node(p[-1], s)


def check_inclusion(index, size, leaf, p, root):
    """None if valid, else the failure category."""
    if index >= size:
        return "index_out_of_range"
    if len(p) != path_len(index, size):
        return "wrong_length"
    if root_from_path(index, size, leaf, p) != root:
        return "root_mismatch"
    return None


def check_consistency(size1, size2, root1, root2, p):
    if size1 == 0 or size1 > size2:
        return "bad_sizes"
    if size1 == size2:
        if p:
            return "non_empty_proof"
        return None if root1 == root2 else "root_mismatch"
    if not p:
        return "empty_proof"
    if len(p) != subproof_len(size1, size2, True):
        return "wrong_length"
    o, s = roots_from_subproof(size1, size2, True, root1, p)
    if o != root1 or s != root2:
        return "root_mismatch"
    return None


# ---- Vector generation ---------------------------------------------------------------------------


def hx(b):
    return b.hex()


def fail(msg):
    sys.stderr.write("gen_merkle.py: FATAL: " + msg + "\n")
    sys.exit(1)


def path_ranges(m, lo, hi):
    """PATH(m, D[lo:hi]) as the leaf ranges [a, b) whose MTH the proof lists (same recursion)."""
    n = hi - lo
    if n == 1:
        return []
    k = split(n)
    if m < k:
        return path_ranges(m, lo, lo + k) + [(lo + k, hi)]
    return path_ranges(m - k, lo + k, hi) + [(lo, lo + k)]


def subproof_ranges(m, lo, hi, b):
    """SUBPROOF(m, D[lo:hi], b) as leaf ranges (same recursion)."""
    n = hi - lo
    if m == n:
        return [] if b else [(lo, hi)]
    k = split(n)
    if m <= k:
        return subproof_ranges(m, lo, lo + k, b) + [(lo + k, hi)]
    return subproof_ranges(m - k, lo + k, hi, False) + [(lo, lo + k)]


def build_tree(name, leaves):
    """Every root, inclusion proof and consistency proof of the tree over `leaves`.

    Proofs are written as the leaf ranges [lo, hi) of the subtrees whose hashes they list, in
    proof order, plus one table `subtree_hashes` of [lo, hi, MTH(D[lo:hi])] for every range any
    proof uses: the same bytes as listing the hashes inline, at a fraction of the size. Each
    range list is checked here against the hash list PATH / PROOF compute from the data.
    """
    n = len(leaves)
    roots = [mth(leaves[:s]) for s in range(n + 1)]
    table = {}

    def hashes_of(ranges, expected):
        for lo, hi in ranges:
            table.setdefault((lo, hi), mth(leaves[lo:hi]))
        if [table[r] for r in ranges] != expected:
            fail("self-check: range list disagrees with the RFC hash list")
        return [[lo, hi] for lo, hi in ranges]

    inclusion = []
    for size in range(1, n + 1):
        d = leaves[:size]
        for index in range(size):
            p = path(index, d)
            lh = leaf_hash(leaves[index])
            if check_inclusion(index, size, lh, p, roots[size]) is not None:
                fail("self-check: inclusion %d/%d does not verify" % (index, size))
            rs = hashes_of(path_ranges(index, 0, size), p)
            inclusion.append({"index": index, "size": size, "leaf_hash": hx(lh), "proof": rs})
    consistency = []
    for size2 in range(1, n + 1):
        d = leaves[:size2]
        for size1 in range(1, size2 + 1):
            p = proof(size1, d)
            if check_consistency(size1, size2, roots[size1], roots[size2], p) is not None:
                fail("self-check: consistency %d->%d does not verify" % (size1, size2))
            rs = hashes_of(subproof_ranges(size1, 0, size2, True), p)
            consistency.append({"size1": size1, "size2": size2, "proof": rs})
    return {
        "name": name,
        "leaves_hex": [hx(x) for x in leaves],
        "roots_hex": [hx(r) for r in roots],
        "subtree_hashes": [[lo, hi, hx(h)] for (lo, hi), h in sorted(table.items())],
        "inclusion": inclusion,
        "consistency": consistency,
    }, roots


def flip_bit(h, byte=0, bit=0):
    b = bytearray(h)
    b[byte] ^= 1 << bit
    return bytes(b)


def ends(n):
    """Positions to corrupt in a proof of n hashes: the first and the last."""
    return sorted({0, n - 1}) if n else []


# Representative proofs to mutate, per tree: edges, interior, power-of-two and odd sizes.
NEG_INCLUSION_PAIRS = {
    "ct": [(0, 1), (1, 2), (2, 3), (3, 7), (6, 7), (0, 8), (5, 8)],
    "leaf-37": [(12, 13), (16, 17), (31, 32), (0, 37), (20, 37), (36, 37)],
}
NEG_CONSISTENCY_PAIRS = {
    "ct": [(1, 2), (2, 5), (3, 7), (4, 8), (6, 8), (7, 8)],
    "leaf-37": [(8, 17), (15, 32), (21, 33), (1, 37), (9, 37), (32, 37)],
}


def negatives(tree_name, leaves, roots):
    """Negative cases over one tree. Every case is classified by check_* and must fail."""
    n = len(leaves)
    lh = [leaf_hash(x) for x in leaves]
    incl, cons, skipped = [], [], []

    # optional=True marks extra mutations that may legitimately still verify (a proof cannot tell
    # a leaf hash from an interior hash, so e.g. a size-3 path is also a valid size-4 path when the
    # root is kept); those are skipped when valid. Every other case must fail or generation aborts.
    def add_incl(desc, index, size, leaf, p, root, optional=False):
        expect = check_inclusion(index, size, leaf, p, root)
        if expect is None:
            if optional:
                skipped.append(desc)
                return
            fail("negative inclusion case verifies: " + desc)
        incl.append(
            {
                "tree": tree_name,
                "description": desc,
                "index": index,
                "size": size,
                "leaf_hash": hx(leaf),
                "proof": [hx(h) for h in p],
                "root": hx(root),
                "expect": expect,
            }
        )

    def add_cons(desc, size1, size2, root1, root2, p, optional=False):
        expect = check_consistency(size1, size2, root1, root2, p)
        if expect is None:
            if optional:
                skipped.append(desc)
                return
            fail("negative consistency case verifies: " + desc)
        cons.append(
            {
                "tree": tree_name,
                "description": desc,
                "size1": size1,
                "size2": size2,
                "root1": hx(root1),
                "root2": hx(root2),
                "proof": [hx(h) for h in p],
                "expect": expect,
            }
        )

    def root_of(s):
        # Sizes beyond the tree (doubling) claim the largest root we have: the proof must still fail.
        return roots[min(s, n)]

    # ---- Inclusion.
    add_incl("size 0: the empty tree has no leaf 0", 0, 0, lh[0], [], roots[0])
    for i, s in NEG_INCLUSION_PAIRS[tree_name]:
        p = path(i, leaves[:s])
        r = roots[s]
        tag = "leaf %d of %d: " % (i, s)
        add_incl(tag + "index == size", s, s, lh[i], p, r)
        add_incl(tag + "index > size", s + 1, s, lh[i], p, r)
        if p:
            add_incl(tag + "empty proof where one is needed", i, s, lh[i], [], r)
            add_incl(tag + "truncated proof (last hash dropped)", i, s, lh[i], p[:-1], r)
            if len(p) > 1:
                add_incl(tag + "truncated proof (first hash dropped)", i, s, lh[i], p[1:], r)
            for j in ends(len(p)):
                bad = list(p)
                bad[j] = flip_bit(bad[j], byte=(j * 7) % 32, bit=j % 8)
                add_incl(tag + "one bit flipped in proof hash %d" % j, i, s, lh[i], bad, r)
        add_incl(tag + "extra hash appended (proof must be fully consumed)", i, s, lh[i], p + [lh[i]], r)
        add_incl(tag + "wrong leaf hash (the next leaf's)", i, s, lh[(i + 1) % n], p, r)
        add_incl(tag + "wrong leaf hash (SHA-256 of the data, no 0x00 prefix)", i, s, sha256(leaves[i]), p, r)
        add_incl(tag + "wrong root (the previous size's)", i, s, lh[i], p, roots[s - 1])
        add_incl(tag + "wrong root (one bit flipped)", i, s, lh[i], p, flip_bit(r, 31, 7))
        if i + 1 < s:
            add_incl(tag + "proof for index i presented as index i+1", i + 1, s, lh[i], p, r)
        else:
            add_incl(tag + "proof for index i presented as index i+1 (= size)", i + 1, s, lh[i], p, r)
        add_incl(tag + "proof for index i presented as index i XOR 2", i ^ 2, s, lh[i], p, r)
        add_incl(tag + "tree size doubled", i, 2 * s, lh[i], p, root_of(2 * s))
        add_incl(tag + "tree size doubled (root kept)", i, 2 * s, lh[i], p, r, optional=True)
        add_incl(tag + "tree size halved", i, s // 2, lh[i], p, roots[s // 2])
        add_incl(tag + "tree size plus one (root kept)", i, s + 1, lh[i], p, r, optional=True)
        if s > 1:
            add_incl(tag + "tree size minus one (root kept)", i, s - 1, lh[i], p, r, optional=True)

    # ---- Consistency.
    add_cons("size1 = 0, size2 = 0", 0, 0, roots[0], roots[0], [])
    add_cons("size1 = 0, size2 = 1, empty proof", 0, 1, roots[0], roots[1], [])
    add_cons("size1 = 0 with a proof", 0, n, roots[0], roots[n], [lh[0]])
    add_cons("size1 = 0 with the proof for size1 = 1", 0, n, roots[0], roots[n], proof(1, leaves))
    for s in [1, 2, 5, 8] if n <= 8 else [1, 16, n]:
        tag = "size %d: " % s
        add_cons(tag + "size1 = size2 with a non-empty proof (the root)", s, s, roots[s], roots[s], [roots[s]])
        add_cons(tag + "size1 = size2 with different roots", s, s, roots[s], roots[s - 1], [])
        add_cons(tag + "size1 = size2 with one root bit flipped", s, s, roots[s], flip_bit(roots[s]), [])
    for a, b in NEG_CONSISTENCY_PAIRS[tree_name]:
        p = proof(a, leaves[:b])
        r1, r2 = roots[a], roots[b]
        tag = "%d -> %d: " % (a, b)
        add_cons(tag + "size1 > size2 (sizes and roots swapped)", b, a, r2, r1, p)
        add_cons(tag + "size1 > size2 (roots in place)", b, a, r1, r2, p)
        add_cons(tag + "size1 = size2 (both size2) with this non-empty proof", b, b, r2, r2, p)
        add_cons(tag + "empty proof where one is needed", a, b, r1, r2, [])
        add_cons(tag + "truncated proof (last hash dropped)", a, b, r1, r2, p[:-1])
        if len(p) > 1:
            add_cons(tag + "truncated proof (first hash dropped)", a, b, r1, r2, p[1:])
        add_cons(tag + "extra hash appended (proof must be fully consumed)", a, b, r1, r2, p + [r1])
        add_cons(tag + "old root prepended", a, b, r1, r2, [r1] + p)
        for j in ends(len(p)):
            bad = list(p)
            bad[j] = flip_bit(bad[j], byte=(j * 7) % 32, bit=j % 8)
            add_cons(tag + "one bit flipped in proof hash %d" % j, a, b, r1, r2, bad)
        add_cons(tag + "wrong old root (the previous size's)", a, b, roots[a - 1] if a > 1 else lh[1], r2, p)
        add_cons(tag + "wrong old root (one bit flipped)", a, b, flip_bit(r1, 5, 3), r2, p)
        add_cons(tag + "wrong new root (the previous size's)", a, b, r1, roots[b - 1], p)
        add_cons(tag + "wrong new root (one bit flipped)", a, b, r1, flip_bit(r2, 17, 1), p)
        add_cons(tag + "swapped roots", a, b, r2, r1, p)
        add_cons(tag + "size2 doubled", a, 2 * b, r1, root_of(2 * b), p)
        add_cons(tag + "size2 doubled (roots kept)", a, 2 * b, r1, r2, p, optional=True)
        add_cons(tag + "size2 halved", a, b // 2, r1, roots[b // 2], p)
        if a > 1:
            add_cons(tag + "size1 halved", a // 2, b, roots[a // 2], r2, p)
        if 2 * a <= b:
            add_cons(tag + "size1 doubled", 2 * a, b, roots[2 * a], r2, p)
        add_cons(tag + "size2 plus one (roots kept)", a, b + 1, r1, r2, p, optional=True)
    return incl, cons, skipped


def main():
    ct = [bytes.fromhex(h) for h in CT_LEAVES_HEX]
    big = [b"leaf-%d" % i for i in range(BIG_N)]

    ct_tree, ct_roots = build_tree("ct", ct)
    if hx(ct_roots[8]) != CT_ROOT_8:
        fail("CT size-8 root is %s, expected %s" % (hx(ct_roots[8]), CT_ROOT_8))
    if hx(ct_roots[1]) != CT_ROOT_1:
        fail("CT size-1 root is %s, expected %s" % (hx(ct_roots[1]), CT_ROOT_1))
    for s, want in CT_ROOTS_KNOWN.items():
        if hx(ct_roots[s]) != want:
            fail("CT size-%d root is %s, expected %s" % (s, hx(ct_roots[s]), want))
    for (i, s), want in CT_INCLUSION_KNOWN.items():
        if [hx(h) for h in path(i, ct[:s])] != want:
            fail("CT inclusion proof %d/%d differs from the published one" % (i, s))
    for (a, b), want in CT_CONSISTENCY_KNOWN.items():
        if [hx(h) for h in proof(a, ct[:b])] != want:
            fail("CT consistency proof %d->%d differs from the published one" % (a, b))
    if hx(ct_roots[0]) != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855":
        fail("empty root is not SHA-256('')")

    big_tree, big_roots = build_tree("leaf-37", big)

    neg_incl, neg_cons, skipped = [], [], []
    for name, leaves, roots in [("ct", ct, ct_roots), ("leaf-37", big, big_roots)]:
        i, c, sk = negatives(name, leaves, roots)
        neg_incl += i
        neg_cons += c
        skipped += ["%s: %s" % (name, x) for x in sk]

    doc = {
        "description": (
            "RFC 6962 section 2.1 Merkle tree hashes, inclusion proofs (PATH) and consistency "
            "proofs (PROOF), computed recursively from the RFC by gen_merkle.py (independent of "
            "src/core/merkle.rs). Leaf hash = SHA-256(0x00 || data), node = SHA-256(0x01 || l || r). "
            "roots_hex[s] is the root of the first s leaves (s = 0 is SHA-256 of the empty string). "
            "inclusion: every (index, size) with 0 <= index < size <= leaves; consistency: every "
            "(size1, size2) with 1 <= size1 <= size2 <= leaves (size1 = size2 has the empty proof). "
            "Positive proofs are lists of leaf ranges [lo, hi) in RFC order (deepest first); the "
            "proof hash of [lo, hi) is MTH(D[lo:hi]), listed once per tree in subtree_hashes as "
            "[lo, hi, hex]. Negative cases carry literal hex hashes and must be rejected with the "
            "category in 'expect' (see gen_merkle.py)."
        ),
        "generator": "tests/it/vectors/gen_merkle.py",
        "trees": [ct_tree, big_tree],
        "negative_inclusion": neg_incl,
        "negative_consistency": neg_cons,
    }

    # One record per line: compact, yet diffs stay readable.
    def dump_list(items, indent):
        if not items:
            return "[]"
        pad = " " * indent
        return "[\n" + ",\n".join(pad + json.dumps(x, separators=(",", ":")) for x in items) + "\n" + pad[:-2] + "]"

    out = ["{"]
    out.append('  "description": %s,' % json.dumps(doc["description"]))
    out.append('  "generator": %s,' % json.dumps(doc["generator"]))
    out.append('  "trees": [')
    tree_parts = []
    for t in doc["trees"]:
        part = ["    {"]
        part.append('      "name": %s,' % json.dumps(t["name"]))
        part.append('      "leaves_hex": %s,' % json.dumps(t["leaves_hex"], separators=(",", ":")))
        part.append('      "roots_hex": %s,' % dump_list(t["roots_hex"], 8))
        part.append('      "subtree_hashes": %s,' % dump_list(t["subtree_hashes"], 8))
        part.append('      "inclusion": %s,' % dump_list(t["inclusion"], 8))
        part.append('      "consistency": %s' % dump_list(t["consistency"], 8))
        part.append("    }")
        tree_parts.append("\n".join(part))
    out.append(",\n".join(tree_parts))
    out.append("  ],")
    out.append('  "negative_inclusion": %s,' % dump_list(neg_incl, 4))
    out.append('  "negative_consistency": %s' % dump_list(neg_cons, 4))
    out.append("}")
    text = "\n".join(out) + "\n"
    # The hand-made layout must still be the same JSON.
    if json.loads(text) != doc:
        fail("serialised JSON does not round-trip")

    dest = os.path.join(os.path.dirname(os.path.abspath(__file__)), "merkle-proofs.json")
    with open(dest, "w", encoding="utf-8") as f:
        f.write(text)
    counts = (
        sum(len(t["inclusion"]) for t in doc["trees"]),
        sum(len(t["consistency"]) for t in doc["trees"]),
        len(neg_incl),
        len(neg_cons),
    )
    print(
        "wrote %s (%d bytes): %d inclusion, %d consistency, %d negative inclusion, %d negative consistency"
        % ((dest, len(text.encode())) + counts)
    )
    print("%d optional mutations still verify and were left out:" % len(skipped))
    for x in skipped:
        print("  " + x)


if __name__ == "__main__":
    main()
