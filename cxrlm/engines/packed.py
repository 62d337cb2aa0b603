"""oneDNN-packed fp32 weights: how the fast engine runs the language model's Linear layers on a CPU.

PyTorch computes an fp32 nn.Linear on the CPU with the BLAS of its build (MKL in the PyPI wheels), from the weight
as stored. For the shapes of decoding (a few rows against a large weight), and on AMD CPUs at every shape, that is
far from the memory bandwidth: on this project's 2-core AMD EPYC machine, Qwen2.5-0.5B's Linear layers ran 1.7-2x
faster at 1 row, 2-4x at 4-16 rows and 2.2x at 512 rows through oneDNN, with each weight reordered once into
oneDNN's blocked layout (`torch.ops.mkldnn._linear_pointwise`: the kernel torch.compile's CPU "freezing" path
emits). The arithmetic is fp32 either way; only the order of the sums differs (outputs agree to ~1e-6 relative).
The packed weight is an opaque oneDNN tensor: no gradients, no state_dict, CPU only.
"""

import torch
from torch import nn


class PackedLinear(nn.Module):
    """An fp32 Linear whose weight lives in oneDNN's blocked layout."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x):
        if x.requires_grad and torch.is_grad_enabled():  # oneDNN's kernel has no backward: fail, never a wrong gradient
            raise RuntimeError("this model's weights are packed for the fast engine (inference only): load the model "
                               "again for gradients or heatmaps")
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp32 oneDNN-packed"


def can_pack(model, device: str) -> bool:
    """oneDNN packing applies: a CPU, fp32 weights, and a PyTorch built with oneDNN."""
    return (device == "cpu" and model.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def pack(model) -> int:
    """Replace the language model's fp32 nn.Linear layers and the output head with PackedLinear, in place (the
    vision tower runs once per image and keeps its own). Returns how many were packed. The input embedding table
    stays as it is: with tied weights the head gets its own packed copy."""
    count = _replace(model.get_decoder())
    head = model.get_output_embeddings()
    if type(head) is nn.Linear:
        model.set_output_embeddings(PackedLinear(head))
        count += 1
    return count


def _replace(module: nn.Module) -> int:
    count = 0
    for name, child in module.named_children():
        if type(child) is nn.Linear:  # exactly nn.Linear: subclasses (LoRA, int8) carry their own forward
            setattr(module, name, PackedLinear(child))
            count += 1
        else:
            count += _replace(child)
    return count
