"""The reference for the SentencePiece (Unigram) parity test in tokenizer.rs.

Reads a real SentencePiece model, writes the tokenizer.json that transformers' XLM-R converter
makes of it (what a bge-reranker or multilingual-e5 checkpoint ships), and the ids that
SentencePiece itself gives for each text, laid out as XLM-R lays them out: fairseq's ids
(<s>=0, <pad>=1, </s>=2, <unk>=3, every piece one above SentencePiece's id), `<s> A </s>` and
`<s> A </s></s> B </s>`.

Usage: sentencepiece_reference.py MODEL OUT_DIR
"""
import json
import sys

import sentencepiece as spm
from transformers.convert_slow_tokenizer import XLMRobertaConverter

FAIRSEQ = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
TEXTS = [
    "Hello world, it's a test.",
    "holding that the district court did not abuse its discretion in denying the motion",
    "Héllo   wörld: ｆｕｌｌ-width ① and ﬁ ligatures",  # NFKC, runs of spaces
    "  leading and trailing  ",
    "tab\tnew\nline\r\nand\u00a0nbsp",
    "日本語のテキスト and 中文 mixed with English",
    "emoji 🙂 and accents: naïve café résumé",
    "UPPER lower MiXeD 1234567890 3.14 $100 (a) [b] {c}",
    "",
]


class Source:
    """The part of a slow tokenizer that the converter reads."""

    def __init__(self, path):
        self.vocab_file = path

    def convert_tokens_to_ids(self, token):
        return FAIRSEQ[token]


def main(model, out):
    sp = spm.SentencePieceProcessor(model_file=model)
    assert sp.unk_id() == 0, "the fairseq mapping below assumes SentencePiece's unk is id 0"
    XLMRobertaConverter(Source(model)).converted().save(f"{out}/tokenizer.json")

    def pieces(text):
        return [FAIRSEQ["<unk>"] if i == sp.unk_id() else i + 1 for i in sp.encode(text)]

    singles = [[0] + pieces(t) + [2] for t in TEXTS]
    pairs = [[t, u, [0] + pieces(t) + [2, 2] + pieces(u) + [2]] for t, u in zip(TEXTS, TEXTS[1:])]
    with open(f"{out}/expected.json", "w") as f:
        json.dump({"texts": TEXTS, "singles": singles, "pairs": pairs}, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
