"""EfficientNet-Lite0 (224x224 -> the head's maps, `extract_features`) on PyTorch and ONNX
Runtime, 2 threads, images/s: the anchors for examples/lite0_throughput.rs. The reference model of
`efficientnet-lite-pytorch` 0.1.0 (weights do not change the speed; the checkpoint is used when
given). Usage: python ort_bench.py REPS BATCH [PTH]
(venv with torch, onnx, onnxruntime, efficientnet-lite-pytorch==0.1.0)."""
import os
import statistics
import sys
import tempfile
import time

import torch
from efficientnet_lite_pytorch import EfficientNet

torch.set_num_threads(2)
torch.manual_seed(0)
reps, b = int(sys.argv[1]), int(sys.argv[2])
if len(sys.argv) > 3:
    m = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=sys.argv[3])
else:
    m = EfficientNet.from_name("efficientnet-lite0")
m.eval()


class Features(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x)


f = Features(m).eval()
x = torch.randn(b, 3, 224, 224)


def timeit(name, fn):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    md = statistics.median(ts)
    print(f"RESULT {name} b={b} img/s={b / md:.1f} runs={[round(t, 4) for t in ts]}", flush=True)


with torch.inference_mode():
    timeit(f"torch-{torch.__version__}", lambda: f(x))

import onnxruntime as ort  # noqa: E402

p = os.path.join(tempfile.mkdtemp(), "lite0.onnx")
torch.onnx.export(f, x, p, input_names=["x"], output_names=["y"], dynamo=False,
                  dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
so = ort.SessionOptions()
so.intra_op_num_threads = 2
so.inter_op_num_threads = 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
xn = x.numpy()
timeit(f"onnxruntime-{ort.__version__}", lambda: s.run(None, {"x": xn}))
