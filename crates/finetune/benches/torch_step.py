"""PyTorch's training step of VGG16's top convolutions + pool5 + a dense head, the work of one
`finetune` step, for `examples/step_throughput.rs` to compare against (2 threads).

    python3 torch_step.py REPS BATCH LAYERS [cl|nocl]
LAYERS: 1 (conv5_3, from stored conv5_2 maps) or 3 (conv5_1..conv5_3, from pool4).
Prints `RESULT ... img/s=` with the median over REPS steps (after one warm-up step).
"""
import statistics
import sys
import time

import torch
import torch.nn as nn

torch.set_num_threads(2)
torch.manual_seed(0)
reps, batch, layers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cl = len(sys.argv) > 4 and sys.argv[4] == "cl"
fmt = torch.channels_last if cl else torch.contiguous_format
convs = []
for _ in range(layers):
    convs += [nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(inplace=True)]
top = nn.Sequential(*convs, nn.MaxPool2d(2, 2)).to(memory_format=fmt)
head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(512, 10))
opt = torch.optim.SGD(
    [{"params": top.parameters(), "lr": 1e-3}, {"params": head.parameters(), "lr": 1e-2}],
    momentum=0.9, weight_decay=5e-4,
)
lossf = nn.CrossEntropyLoss()
print("torch", torch.__version__, "threads", torch.get_num_threads(), "channels_last", cl, flush=True)
ts = []
for r in range(reps + 1):
    x = torch.randn(batch, 512, 14, 14).abs().to(memory_format=fmt)
    y = torch.arange(batch) % 10
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = lossf(head(top(x)), y)
    loss.backward()
    opt.step()
    lv = loss.item()
    dt = time.perf_counter() - t
    if r == 0:
        continue
    ts.append(dt)
md = statistics.median(ts)
print(f"RESULT torch step layers={layers} cl={cl} b={batch} median_t={md:.3f}s img/s={batch / md:.2f} "
      f"runs={[round(t, 3) for t in ts]}", flush=True)
