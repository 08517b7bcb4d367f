"""Embeddings of a saved bi-encoder as sentence-transformers reads it, for the pooling tests.

usage: st_embed.py MODEL_DIR [PROMPT_NAME] < texts.json > embeddings.json
float32, CPU, `encode(texts, prompt_name=PROMPT_NAME)` (no prompt without one).
"""
import json
import sys

from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")
texts = json.load(sys.stdin)
prompt_name = sys.argv[2] if len(sys.argv) > 2 else None
vectors = model.encode(texts, prompt_name=prompt_name, convert_to_numpy=True)
json.dump(vectors.tolist(), sys.stdout)
