"""int8 weights for CPU decoding (`--quantize int8`): the language model's Linear layers and the output head.

Decoding one token reads every weight of the language model once, so on a CPU its speed is set by memory
bandwidth: int8 weights are a quarter of fp32's bytes. Each Linear's weight is quantized symmetrically per output
channel (scale = the row's largest magnitude / 127) and packed for PyTorch's fbgemm kernels
(`quantized::linear_dynamic`, x86 with AVX2 or newer), which quantize each input to int8 on the fly (one scale
per call: in a batch, a row's result depends slightly on the other rows) and return fp32. The vision tower stays fp32: it runs once per image, is bound by compute, not bandwidth, and its activations
suffer most from int8. No gradients pass through these layers, so heatmaps need the unquantized model.
PyTorch has marked its quantized tensors deprecated in favour of torchao, whose CPU int8 path needs torch.compile;
tests/test_int8.py fails the day these kernels go.
"""

import warnings

import torch
from torch import nn

from cxrlm.errors import ModelLoadError


class Int8Linear(nn.Module):
    """A Linear with a per-output-channel int8 weight, fp32 in and out."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()  # a zero row keeps a usable scale
        zeros = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # PyTorch marks qint8 tensors deprecated (its issue 184982), not yet gone
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.quantize_per_channel(weight, scales, zeros, axis=0, dtype=torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack(quantized, bias)

    @property
    def weight(self):
        """The quantized weight (torch.qint8, out x in); `.dequantize()` gives it back in fp32."""
        return torch.ops.quantized.linear_unpack(self.packed)[0]

    def forward(self, x):
        shape = x.shape
        out = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float().contiguous(), self.packed, False)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def quantize(model, device: str, dtype) -> None:
    """Replace the language model's Linear layers and the output head with Int8Linear, in place. A one-line
    ModelLoadError where it cannot apply."""
    if device != "cpu":
        raise ModelLoadError("--quantize int8 runs on the CPU only (PyTorch's fbgemm kernels): on a GPU use "
                             "--dtype bf16, or --engine vllm")
    if dtype != torch.float32:
        raise ModelLoadError("--quantize int8 computes in fp32 between its int8 weights: leave --dtype at auto or fp32")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise ModelLoadError("--quantize int8 needs PyTorch's fbgemm kernels (an x86 CPU with AVX2): run without it")
    _replace_linears(model.get_decoder())
    head = model.get_output_embeddings()
    if isinstance(head, nn.Linear):  # tied to the embedding table or not: the table itself stays fp32
        model.set_output_embeddings(Int8Linear(head))


def _replace_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            _replace_linears(child)
