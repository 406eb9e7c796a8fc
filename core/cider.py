"""The CIDEr-D core that retrieval, reranking, the self-critical reward and the quality measures
share, and the light normalisation used to compare whole captions.

:func:`cider_d_matrix` scores every candidate against every clip's references at once; it equals
pycocoevalcap's ``Cider`` (CIDEr-D) on the same tokenised text. Texts are tokenised as the
project's scorer does (:func:`core.ptb_tokenizer.coco_tokenize_python`, which gives the tokens of
pycocoevalcap's Java PTB tokenizer).
"""
from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
from scipy import sparse

from core.ptb_tokenizer import coco_tokenize_python

CIDER_N = 4            # n-gram orders 1..4
CIDER_SIGMA = 6.0      # width of CIDEr-D's Gaussian length penalty
CIDER_SCALE = 10.0     # CIDEr-D is reported x10

# Characters removed from the end of a caption by normalize_text (with spaces between them).
_TRAILING = string.punctuation + "\u2026 "


def normalize_text(text: str) -> str:
    """The light normalisation used to compare whole captions.

    Lower-case; every run of white space becomes one space and both ends are stripped; then
    trailing ASCII punctuation (and the ellipsis character), with any spaces between them, is
    removed.  ``"  Keep  your guard UP !. "`` -> ``"keep your guard up"``.  Inner punctuation
    (``"isn't"``, commas) is kept.
    """
    return " ".join(text.lower().split()).rstrip(_TRAILING)


# ------------------------------------------------------------------------------------------
# CIDEr-D
# ------------------------------------------------------------------------------------------
NGram = tuple
Counts = list  # one Counter per n-gram order: [Counter(1-grams), ..., Counter(n-grams)]


def coco_tokenize(texts: Sequence[str]) -> list[str]:
    """COCO-tokenised texts (lower-case, PTB tokens, punctuation dropped), as the scorer does."""
    return coco_tokenize_python(list(texts))


def ngram_counts(tokens: str, n: int = CIDER_N) -> Counts:
    """``[Counter of 1-grams, ..., Counter of n-grams]`` of a tokenised text (split on white space)."""
    words = tokens.split()
    return [Counter(tuple(words[i:i + k]) for i in range(len(words) - k + 1)) for k in range(1, n + 1)]


@dataclass(frozen=True)
class DocumentFrequency:
    """In how many documents (clips: the union of a clip's references) each n-gram occurs."""

    counts: Mapping[NGram, int]
    n_documents: int

    def idf(self, grams: Sequence[NGram]) -> np.ndarray:
        """``log(n_documents) - log(max(1, df))`` for each n-gram (an unseen n-gram has df 1)."""
        df = np.array([max(1.0, float(self.counts.get(g, 0))) for g in grams], dtype=np.float64)
        return np.log(float(self.n_documents)) - np.log(df)


def document_frequency_from_counts(documents: Sequence[Sequence[Counts]]) -> DocumentFrequency:
    df: Counter = Counter()
    for refs in documents:
        df.update({g for ref in refs for order in ref for g in order})
    return DocumentFrequency(dict(df), len(documents))


def document_frequency(documents: Sequence[Sequence[str]], *, tokenized: bool = False,
                       n: int = CIDER_N) -> DocumentFrequency:
    """Document frequencies of a reference corpus: ``documents[m]`` is clip m's reference texts
    (raw, or COCO-tokenised with ``tokenized=True``)."""
    flat = [t for refs in documents for t in refs]
    tokens = flat if tokenized else coco_tokenize(flat)
    counts = [ngram_counts(t, n) for t in tokens]
    grouped, start = [], 0
    for refs in documents:
        grouped.append(counts[start:start + len(refs)])
        start += len(refs)
    return document_frequency_from_counts(grouped)


def _order_matrices(cands: Sequence[Counts], refs: Sequence[Counts], order: int
                    ) -> tuple[sparse.csr_matrix, sparse.csr_matrix, list[NGram]]:
    """Sparse count matrices (candidates x n-grams, references x n-grams) for one n-gram order,
    over the n-grams of either side."""
    vocab: dict[NGram, int] = {}

    def build(texts: Sequence[Counts]) -> sparse.csr_matrix:
        indptr, indices, data = [0], [], []
        for counts in texts:
            for gram, count in counts[order].items():
                indices.append(vocab.setdefault(gram, len(vocab)))
                data.append(count)
            indptr.append(len(indices))
        return indptr, indices, data

    c_parts, r_parts = build(cands), build(refs)
    shape_c, shape_r = (len(cands), len(vocab)), (len(refs), len(vocab))
    cand_m = sparse.csr_matrix((np.array(c_parts[2], float), c_parts[1], c_parts[0]), shape=shape_c)
    ref_m = sparse.csr_matrix((np.array(r_parts[2], float), r_parts[1], r_parts[0]), shape=shape_r)
    return cand_m, ref_m, list(vocab)


def _row_norms(counts: sparse.csr_matrix, idf: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row's TF-IDF vector (``tf * idf``)."""
    squares = counts.copy()
    squares.data = (counts.data * idf[counts.indices]) ** 2
    return np.sqrt(np.asarray(squares.sum(axis=1)).ravel())


def _clipped_dot(cand: sparse.csr_matrix, ref: sparse.csr_matrix, idf: np.ndarray) -> np.ndarray:
    """``sum_g min(h_g, r_g) * r_g`` for every (candidate, reference) pair, where ``h = tf * idf``.

    With integer counts a, b: ``min(a, b) * b = sum_{t >= 1} [a >= t] * [b >= t] * b``, so the
    clipped products are a few sparse matrix products, one per count level t of the candidates.
    """
    out = np.zeros((cand.shape[0], ref.shape[0]))
    if not cand.nnz or not ref.nnz:
        return out
    for level in range(1, int(cand.data.max()) + 1):
        a = cand.copy()
        a.data = np.where(cand.data >= level, idf[cand.indices], 0.0)
        b = ref.copy()
        b.data = np.where(ref.data >= level, ref.data * idf[ref.indices], 0.0)
        out += (a @ b.T).toarray()
    return out


def _bigram_lengths(texts: Sequence[Counts]) -> np.ndarray:
    # pycocoevalcap's CIDEr-D takes a text's length to be its number of bigrams (words - 1).
    return np.array([sum(c[1].values()) if len(c) > 1 else 0 for c in texts], dtype=np.float64)


def cider_from_counts(cands: Sequence[Counts], references: Sequence[Sequence[Counts]],
                       df: DocumentFrequency, n: int = CIDER_N, sigma: float = CIDER_SIGMA) -> np.ndarray:
    """CIDEr-D matrix ``[candidates, clips]`` from n-gram counts (see :func:`cider_d_matrix`)."""
    flat = [r for refs in references for r in refs]
    owner = np.repeat(np.arange(len(references)), [len(refs) for refs in references])
    similarity = np.zeros((len(cands), len(flat)))
    for order in range(n):
        cand_m, ref_m, grams = _order_matrices(cands, flat, order)
        idf = df.idf(grams)
        norm_c, norm_r = _row_norms(cand_m, idf), _row_norms(ref_m, idf)
        denominator = np.outer(norm_c, norm_r)
        dot = _clipped_dot(cand_m, ref_m, idf)
        similarity += np.divide(dot, denominator, out=np.zeros_like(dot), where=denominator != 0)
    delta = _bigram_lengths(cands)[:, None] - _bigram_lengths(flat)[None, :]
    similarity *= np.power(np.e, -(delta ** 2) / (2 * sigma ** 2))
    per_clip = np.zeros((len(cands), len(references)))
    np.add.at(per_clip.T, owner, similarity.T)  # sum over each clip's references
    sizes = np.array([len(refs) for refs in references], dtype=np.float64)
    return per_clip / n / sizes[None, :] * CIDER_SCALE


def check_references(references: Sequence[Sequence[str]], what: str = "references") -> None:
    for m, refs in enumerate(references):
        if isinstance(refs, str) or not len(refs):
            raise ValueError(f"{what}[{m}] must be a non-empty list of texts, found {refs!r:.60}")


def cider_d_matrix(candidates: Sequence[str], references: Sequence[Sequence[str]],
                   df_corpus: Union[Sequence[Sequence[str]], DocumentFrequency, None] = None, *,
                   tokenized: bool = False, n: int = CIDER_N, sigma: float = CIDER_SIGMA) -> np.ndarray:
    """CIDEr-D of every candidate against every clip's references: a ``[len(candidates),
    len(references)]`` float array.

    The definition is pycocoevalcap's ``CiderScorer``: for n = 1..4, TF-IDF vectors of the
    n-grams (idf = ``log(#documents) - log(max(1, df))``), the similarity of candidate and
    reference ``sum_g min(h_g, r_g) r_g / (|h| |r|)`` (clipped cosine; 0 when a norm is 0),
    times the length penalty ``exp(-(l_h - l_r)^2 / (2 sigma^2))`` where a length is the
    number of bigrams; the mean over n of the sum over the clip's references, divided by the
    number of references, x10.

    Args:
        candidates: texts to score.
        references: ``references[m]``: clip m's reference texts.
        df_corpus: where the document frequencies come from: ``None`` = ``references`` (one
            document per clip), which makes the diagonal of the square case equal
            ``Cider().compute_score`` over the corpus; a list of reference lists (one per
            document); or a :class:`DocumentFrequency`.
        tokenized: the texts are already COCO-tokenised (otherwise they are tokenised here, as
            the scorer does).
    """
    check_references(references)
    if df_corpus is not None and not isinstance(df_corpus, DocumentFrequency):
        check_references(df_corpus, "df_corpus")
    texts = list(candidates) + [t for refs in references for t in refs]
    if not isinstance(df_corpus, DocumentFrequency) and df_corpus is not None:
        texts += [t for refs in df_corpus for t in refs]
    tokens = texts if tokenized else coco_tokenize(texts)
    counts = [ngram_counts(t, n) for t in tokens]
    cand_counts, rest = counts[:len(candidates)], counts[len(candidates):]
    ref_counts = split_like(rest, references)
    if isinstance(df_corpus, DocumentFrequency):
        df = df_corpus
    elif df_corpus is None:
        df = document_frequency_from_counts(ref_counts)
    else:
        df = document_frequency_from_counts(split_like(rest[sum(len(r) for r in references):], df_corpus))
    return cider_from_counts(cand_counts, ref_counts, df, n, sigma)


def split_like(flat: Sequence, shape_like: Sequence[Sequence]) -> list[list]:
    """Cut ``flat`` into consecutive groups of the lengths of ``shape_like``'s lists."""
    out, start = [], 0
    for group in shape_like:
        out.append(list(flat[start:start + len(group)]))
        start += len(group)
    return out
