"""ONNX graph pieces, one module per compressed item representation.

A head writes two things into a ``graph.Graph``: the session's item vectors (``enc/item_vectors``,
B × L × d, zero at padding) and the B × (N+1) scores of every item from the encoder's session
vector ``enc/session`` (column 0, padding, is dropped by the caller). It must keep the
representation compressed: every N-sized product is taken against the runtime session vector, so
no constant folding (onnxruntime at load, onnxsim) can rebuild an N × d table.
"""

from .cprec import cprec_head
from .tensor_train import stt_head, tt_head

HEADS = {"tt": tt_head, "stt": stt_head, "cprec": cprec_head}
