"""One sentence-transformers CPU backend as a worker of bench/rerank-vs-st.py.

Runs under .venv's python with PYTHONPATH=.cache/bench-cpu-peers (bench/cpu-peers.sh), whose
sentence-transformers 5.1 / transformers 4.57 the ONNX and OpenVINO backends load with. Loads
(exporting once into WORK) the backend named by its arguments, then answers each line "run" on
stdin with one timed pass over the pairs as a JSON line {"seconds": ..., "scores": [...]}, so
that the bench can interleave its repeats with the other stacks'. "quit" ends it.

Usage: cpu_peer.py KIND VARIANT MODEL_DIR WORK PAIRS_JSON   (KIND: cross-encoder | bi-encoder;
VARIANT: onnx | onnx-O3 | onnx-qint8 | openvino | openvino-bf16 | openvino-qint8; env THREADS,
BATCH, MAXLEN)
"""
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
THREADS = int(os.environ.get("THREADS", "2"))
# ONNX Runtime and OpenVINO size their thread pools from these, as torch does from set_num_threads.
os.environ["OMP_NUM_THREADS"] = str(THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import sentence_transformers as st  # noqa: E402

BATCH = int(os.environ.get("BATCH", "32"))
MAXLEN = int(os.environ.get("MAXLEN", "384"))


def onnx_int8_config():
    """ST's documented dynamic int8 export for this CPU: avx512_vnni where it has VNNI."""
    flags = open("/proc/cpuinfo").read()
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def quantize_openvino(model, dest):
    """What ST's export_static_quantized_openvino_model does (OVQuantizationConfig's defaults:
    int8, NNCF's transformer preset, 300 calibration samples), on 300 CaseHOLD train prompts
    (and holdings, for a cross-encoder) where ST would fetch GLUE from the Hub."""
    import nncf
    import openvino as ov
    rows = [json.loads(line) for line in open(os.path.join(os.environ["FINERANK_CASEHOLD"], "train.jsonl"))][:300]
    cross = hasattr(model, "predict")
    tokenizer = model.tokenizer if cross else model[0].tokenizer
    ov_model = model.model.model if cross else model[0].auto_model.model
    names = {i.get_any_name() for i in ov_model.inputs}
    items = []
    for r in rows:
        texts = (r["citing_prompt"], r["holding_0"]) if cross else (r["citing_prompt"],)
        enc = tokenizer(*texts, truncation=True, max_length=MAXLEN, return_tensors="np")
        items.append({k: v for k, v in enc.items() if k in names})
    quantized = nncf.quantize(ov_model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(items))
    ov.save_model(quantized, dest)


def load(kind, variant, source, work):
    """The model in `variant`, exported once into `work` (a copy of `source`)."""
    cls = st.CrossEncoder if kind == "cross-encoder" else st.SentenceTransformer
    backend = variant.split("-")[0]
    d = os.path.join(work, f"{kind}-{backend}")
    if not os.path.isdir(d):
        shutil.copytree(source, d)
    kwargs = {"device": "cpu", "backend": backend}
    if kind == "cross-encoder":
        kwargs["max_length"] = MAXLEN
    model_kwargs = {}
    if backend == "openvino":
        # OpenVINO's CPU plugin runs fp32 models in bf16 by default where the CPU has bf16 units:
        # "openvino" holds it to fp32, "openvino-bf16" is that default, named for what it does.
        # The int8 model keeps the default for what stays in floating point.
        model_kwargs["ov_config"] = {"INFERENCE_NUM_THREADS": THREADS}
        hint = {"openvino": "f32", "openvino-bf16": "bf16"}.get(variant)
        if hint:
            model_kwargs["ov_config"]["INFERENCE_PRECISION_HINT"] = hint
    else:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        model_kwargs["session_options"] = opts
    if variant == "onnx-O3":
        name = "onnx/model_O3.onnx"
        if not os.path.exists(os.path.join(d, name)):
            st.export_optimized_onnx_model(cls(d, **kwargs), "O3", d)
        model_kwargs["file_name"] = name
    elif variant == "onnx-qint8":
        cfg = onnx_int8_config()
        name = f"onnx/model_qint8_{cfg}.onnx"
        if not os.path.exists(os.path.join(d, name)):
            st.export_dynamic_quantized_onnx_model(cls(d, **kwargs), cfg, d)
        model_kwargs["file_name"] = name
    elif variant == "openvino-qint8":
        name = "openvino/openvino_model_qint8_quantized.xml"
        if not os.path.exists(os.path.join(d, name)):
            quantize_openvino(cls(d, **kwargs), os.path.join(d, name))
        model_kwargs["file_name"] = name
    return cls(d, model_kwargs=model_kwargs, **kwargs)


def main():
    kind, variant, source, work, pairs_path = sys.argv[1:6]
    # The bench reads this worker's answers from stdout, so everything the libraries print there
    # (NNCF's progress bars, for one) goes to stderr, the worker's log, instead.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    torch.set_num_threads(THREADS)
    pairs = json.load(open(pairs_path))
    model = load(kind, variant, source, work)
    if kind == "cross-encoder":
        model.max_length = MAXLEN

        def score():
            return np.asarray(model.predict(pairs, batch_size=BATCH)).reshape(-1)
    else:
        model.max_seq_length = MAXLEN
        queries = [q for q, _ in pairs[::5]]
        holdings = [h for _, h in pairs]

        def score():
            q = model.encode(queries, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)
            h = model.encode(holdings, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)
            return np.einsum("qd,qkd->qk", q, h.reshape(len(queries), 5, -1)).reshape(-1)
    score()  # warm-up
    print(json.dumps({"ready": variant}), file=answers)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t = time.perf_counter()
        s = score()
        print(json.dumps({"seconds": time.perf_counter() - t, "scores": s.tolist()}), file=answers)


if __name__ == "__main__":
    main()
