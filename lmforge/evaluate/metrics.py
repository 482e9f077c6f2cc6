"""Generation metrics, written by hand (a few dozen lines; the usual packages pull in nltk / jieba
and differ from each other in tokenisation and smoothing, so the definitions are stated here):

- tokens: each CJK character is a token; other text splits into words (letters/digits runs) and
  single punctuation marks, lower-cased. "今天 is sunny!" → 今, 天, is, sunny, !
- exact match: prediction equals reference after stripping surrounding whitespace.
- ROUGE-L: F1 of the longest common subsequence of tokens, per example, averaged (Lin, 2004).
- BLEU-4: corpus BLEU (Papineni et al., 2002): clipped n-gram precisions for n = 1..4 summed
  over the corpus, geometric mean, brevity penalty exp(1 - r/c) when the candidate corpus is
  shorter than the references; 0 when some n has no match (no smoothing), as sacrebleu's default.
All three are reported in [0, 1].
"""

from __future__ import annotations

import math
import re
from collections import Counter

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+|[^\w\s]|_")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.strip() == reference.strip())


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    pred, ref = tokenize(prediction), tokenize(reference)
    lcs = _lcs(pred, ref)
    if not lcs:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(predictions: list[str], references: list[str], max_n: int = 4) -> float:
    matches, totals = [0] * max_n, [0] * max_n
    pred_len = ref_len = 0
    for prediction, reference in zip(predictions, references):
        pred, ref = tokenize(prediction), tokenize(reference)
        pred_len, ref_len = pred_len + len(pred), ref_len + len(ref)
        for n in range(1, max_n + 1):
            p, r = _ngrams(pred, n), _ngrams(ref, n)
            matches[n - 1] += sum(min(count, r[g]) for g, count in p.items())
            totals[n - 1] += max(len(pred) - n + 1, 0)
    if not pred_len or any(m == 0 for m in matches):
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if pred_len > ref_len else math.exp(1 - ref_len / pred_len)
    return brevity * math.exp(log_precision)


def generation_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    n = max(1, len(predictions))
    return {
        "exact_match": sum(map(exact_match, predictions, references)) / n,
        "rouge_l": sum(map(rouge_l, predictions, references)) / n,
        "bleu_4": corpus_bleu(predictions, references),
    }
